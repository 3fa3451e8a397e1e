"""Training configuration: a YAML file over documented defaults, plus ``key.sub=value`` overrides.

Unknown keys are refused (a typo such as ``epoch: 500`` must not silently train with the
default). Paths in the file are relative to the file's folder; ``output_dir`` may hold
environment variables (``$WANDB_RUN_ID`` under a W&B sweep agent).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

from LungAutoSegLib.errors import InputError
from LungAutoSegLib.networks import UNET_DEFAULTS, downsampling_factor
from LungAutoSegLib.plan import Inference, ModelPlan, Preprocessing

DEFAULTS: dict = {
    "name": "lungs",                      # run name, and the model package's name
    "version": "0.1.0",                   # the model package's version
    "output_dir": "runs/lungs",           # checkpoints, history, package, W&B run folder
    "data": {
        "csv": None,                      # dataset.csv from `lungautoseg-train export`
        "fold": 0,                        # validation fold; the other folds train. null: no validation
        "structures": ["Lung_R", "Lung_L"],
        "cache_dir": None,                # preprocessed cases; default <output_dir>/cache
    },
    "preprocessing": {"spacing": [3.0, 3.0, 3.0], "hu_window": list(Preprocessing.hu_window)},
    "patch_size": list(Inference.patch_size),  # voxels along L, P, S (i, j, k)
    "batch_size": 2,                      # cases per step; each gives samples_per_case patches
    "samples_per_case": 2,
    # patch centres: null = 2 on a structure : 1 anywhere; a list (background, then each structure) =
    # centres drawn per class in these ratios, so thin structures (cord, esophagus) are seen as often
    # as a heart 15 times their size
    "class_ratios": None,
    "network": {"class": "UNet", **UNET_DEFAULTS},
    "loss": "dice_ce",                    # dice_ce | dice | ce | batch_dice_ce | batch_dice (Dice over the batch)
    "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-5},
    "schedule": {"name": "cosine", "warmup_steps": 0},  # cosine | poly | constant, stepped per step
    "epochs": 100,
    # window: the largest sliding window (i, j, k) at validation, packaged for inference (model_plan)
    "validation": {"interval": 1, "window": list(Inference.window), "overlap": Inference.overlap, "images_every": 5,
                   "image_cases": 3},
    # edge_hu: the CT-grid edge refinement (plan.Postprocessing.edge_hu), packaged for inference;
    # null: off. `lungautoseg-train tune-edge` chooses it on contoured cases. pieces_ml: structure
    # -> ml, the pieces besides the largest that a structure keeps; bridge_mm: structure -> mm,
    # the longest gap along the slices that it fills (plan.Postprocessing).
    "postprocessing": {"edge_hu": None, "pieces_ml": {}, "bridge_mm": {}},
    "early_stop_patience": None,          # validations without improvement before stopping
    "augmentation": {
        "rotate_degrees": 10.0, "scale": 0.1, "probability": 0.5,
        "intensity_shift": 0.05, "intensity_scale": 0.1, "noise_std": 0.02,
        "flip_left_right": False,         # when on, *_R and *_L labels are swapped with the flip
        "dependent_density": 0.0,         # up to this much denser aerated lung at the dependent side (window units)
        "kernel_probability": 0.0,        # smooth or sharpened reconstruction kernel
        "scan_end_probability": 0.0,      # the scan ends inside the patch (partial coverage)
    },
    "init_weights": None,                 # checkpoint whose weights start the run (fine-tuning)
    "seed": 0,
    "deterministic": False,
    "workers": 0,                         # DataLoader worker processes
    "amp": True,                          # bf16 autocast on CUDA only (20x slower on this CPU)
    "channels_last": True,                # channels_last_3d on CUDA only
    "wandb": {"project": "lungautoseg", "entity": None, "mode": None, "tags": []},
}


# What a checkpoint can be packaged with other than it was trained with.
WEIGHT_NEUTRAL = ("name", "version", "postprocessing")
# Mappings whose keys are open (a network's parameters, structure names): replaced whole, checked
# by what reads them.
OPEN_MAPPINGS = ("network", "pieces_ml", "bridge_mm")


def _merge(base: dict, update: dict, where: str = "") -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if key not in base:
            raise InputError(f"unknown config key {where}{key!r}; known: {', '.join(base)}")
        if isinstance(base[key], dict) and key not in OPEN_MAPPINGS:
            if not isinstance(value, dict):
                raise InputError(f"config key {where}{key} must be a mapping")
            merged[key] = _merge(base[key], value, f"{where}{key}.")
        elif isinstance(base[key], float) and isinstance(value, str):
            merged[key] = _number(value, f"{where}{key}")  # YAML 1.1 reads 3e-4 as a string
        else:
            merged[key] = value
    return merged


def _number(text: str, key: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"config key {key} must be a number, got {text!r}") from None


def _override(config: dict, assignment: str) -> dict:
    """``optimizer.lr=3e-4`` (what a W&B sweep agent passes) -> a nested update."""
    key, sep, text = assignment.partition("=")
    if not sep:
        raise InputError(f"override {assignment!r} must look like key.sub=value")
    update: dict = {}
    node = update
    parts = key.lstrip("-").split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(text)
    if parts[0] == "network":  # a network override changes one parameter, not the whole block
        update["network"] = {**config["network"], **update["network"]}
    return _merge(config, update)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> dict:
    config = copy.deepcopy(DEFAULTS)
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise InputError("config file not found", path) from None
        except yaml.YAMLError as error:
            raise InputError(f"config is not valid YAML: {error}", path) from error
        if not isinstance(loaded, dict):
            raise InputError("config must be a YAML mapping", path)
        config = _merge(config, loaded)
        base = path.resolve().parent
    for assignment in overrides:
        config = _override(config, assignment)
    # $VARIABLES expand, so a sweep agent's runs each get a folder: output_dir=runs/$WANDB_RUN_ID
    config["output_dir"] = str((base / os.path.expandvars(config["output_dir"])).resolve())
    if config["init_weights"] is not None:
        config["init_weights"] = str((base / config["init_weights"]).resolve())
    for key in ("csv", "cache_dir"):
        if config["data"][key] is not None:
            config["data"][key] = str((base / config["data"][key]).resolve())
    _validate(config)
    return config


def with_settings(config: dict, settings: list[str]) -> dict:
    """A run's stored config (its keys completed from today's defaults) with ``key.sub=value``
    changes applied; only what leaves the trained weights valid may change."""
    config = _merge(DEFAULTS, config)
    for assignment in settings:
        key = assignment.partition("=")[0].lstrip("-")
        if key.split(".")[0] not in WEIGHT_NEUTRAL:
            raise InputError(f"{key} cannot change after training (the weights depend on it); "
                             f"can: {', '.join(WEIGHT_NEUTRAL)}")
        config = _override(config, assignment)
    model_plan(config)  # a bad value is refused here, not by the engine that loads the package
    return config


def _validate(config: dict) -> None:
    if not config["data"]["csv"]:
        raise InputError("config data.csv is required (the dataset.csv written by export)")
    if not config["data"]["structures"]:
        raise InputError("config data.structures must name at least one structure")
    try:
        model_plan(config)
    except InputError as error:
        raise InputError(f"config preprocessing, patch_size, validation.window/overlap or postprocessing: "
                         f"{error}") from None
    if config["loss"] not in ("dice_ce", "dice", "ce", "batch_dice_ce", "batch_dice"):
        raise InputError(f"unknown loss {config['loss']!r} (dice_ce, dice, ce, batch_dice_ce or batch_dice)")
    if config["optimizer"]["name"] not in ("adamw", "adam", "sgd"):
        raise InputError(f"unknown optimizer {config['optimizer']['name']!r} (adamw, adam or sgd)")
    if config["schedule"]["name"] not in ("cosine", "poly", "constant"):
        raise InputError(f"unknown schedule {config['schedule']['name']!r} (cosine, poly or constant)")
    for key in ("epochs", "batch_size", "samples_per_case"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise InputError(f"config {key} must be a positive integer, got {config[key]!r}")
    if config["wandb"]["mode"] not in (None, "online", "offline", "disabled"):
        raise InputError(f"wandb.mode must be online, offline or disabled, got {config['wandb']['mode']!r}")


def model_plan(config: dict) -> ModelPlan:
    """The plan a run trains for, validates with and packages: the config's preprocessing, its
    patch, its validation window and overlap and its postprocessing over the plan's defaults."""
    postprocessing = {**DEFAULTS["postprocessing"], **config.get("postprocessing", {})}  # older checkpoints lack it
    inference = {"patch_size": config["patch_size"], "window": config["validation"]["window"],
                 "overlap": config["validation"]["overlap"], "postprocessing": postprocessing}
    return ModelPlan(Preprocessing.from_dict(config["preprocessing"]),
                     Inference.from_dict(inference, downsampling_factor(config["network"])))
