"""``lungautoseg-train train``: one training run, single process or DDP under ``torchrun``.

Exact resume: the checkpoint holds model, optimizer, scheduler, epoch, step, best score
and the W&B run id; every random draw of an epoch derives from (seed, epoch, case), so
an epoch started from a checkpoint is the epoch an uninterrupted run would have run.
Checkpoints are written atomically: a kill during a write leaves the previous one.
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from LungAutoSegLib.errors import InputError
from LungAutoSegLib.inference import predict_probabilities
from LungAutoSegLib.networks import build_network, downsampling_factor
from LungAutoSegLib.plan import ModelPlan
from LungAutoSegLib.postprocess import probabilities_to_masks

from . import tracking
from .checkpoints import load_checkpoint, save_checkpoint
from .config import model_plan
from .data import IGNORE, PatchDataset, derived_seed, label_values, prepare_case, read_dataset, split
from .metrics import dice
from .transforms import train_transform

CHECKPOINTS = "checkpoints"


class Distributed:
    """Rank, world size and device; a process group only under torchrun with WORLD_SIZE > 1."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = torch.cuda.is_available()
        self.device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        if self.world > 1:
            dist.init_process_group("nccl" if cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def sum(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor.tolist()

    def close(self):
        if self.world > 1:
            dist.destroy_process_group()


class SegmentationLoss(torch.nn.Module):
    """Soft Dice (per patch and class, background included, as MONAI's DiceLoss) and/or
    cross-entropy, both leaving out voxels labelled ``IGNORE``.

    Partial labels (``unlabelled``: per sample and structure, True where the case has no
    contour of it): the marginal loss. Such a structure may lie anywhere in the case's
    "background", so background's probability there is the sum of background's and the
    unlabelled structures' probabilities, and the unlabelled structures' own Dice terms are
    left out. Counting them as background would teach the network to miss them."""

    def __init__(self, name: str, smooth: float = 1e-5):
        super().__init__()
        self.dice = name in ("dice_ce", "dice", "batch_dice_ce", "batch_dice")
        self.ce, self.smooth = name in ("dice_ce", "ce", "batch_dice_ce"), smooth
        # batch Dice (nnU-Net's): each class's Dice over the whole batch, not per patch, so a patch
        # without a thin structure does not demand zero probability of it everywhere
        self.batch = name.startswith("batch_")
        self.per_structure = None  # the last batch's Dice loss per structure (NaN where none is labelled), to log

    def forward(self, logits: torch.Tensor, label: torch.Tensor, unlabelled: torch.Tensor | None = None) -> torch.Tensor:
        target = label[:, 0].long()
        valid = target != IGNORE
        merged = torch.zeros(logits.shape[:2], dtype=torch.bool, device=logits.device)  # (batch, class)
        if unlabelled is not None:
            merged[:, 1:] = unlabelled.to(logits.device, torch.bool)
        log_p = torch.log_softmax(logits, dim=1)
        if merged.any():
            into_background = merged.clone()
            into_background[:, 0] = True
            background = torch.logsumexp(log_p.masked_fill(~into_background[..., None, None, None], -torch.inf), dim=1)
            log_p = torch.cat([background[:, None], log_p[:, 1:].masked_fill(merged[:, 1:, None, None, None],
                                                                             -torch.inf)], dim=1)
        loss = logits.sum() * 0.0
        if self.ce and valid.any():
            loss = loss + torch.nn.functional.nll_loss(log_p, target, ignore_index=IGNORE)
        if self.dice:
            weight = valid[:, None].to(logits.dtype)
            probabilities = log_p.exp() * weight
            truth = torch.nn.functional.one_hot(torch.where(valid, target, 0), logits.shape[1])
            truth = truth.permute(0, 4, 1, 2, 3).to(logits.dtype) * weight
            overlap = (probabilities * truth).sum(dim=(2, 3, 4))
            total = probabilities.sum(dim=(2, 3, 4)) + truth.sum(dim=(2, 3, 4))
            if self.batch:  # sums over the samples that label each class
                labelled = (~merged).to(logits.dtype)
                overlap, total = (overlap * labelled).sum(0, keepdim=True), (total * labelled).sum(0, keepdim=True)
                merged = merged.all(0, keepdim=True)  # a class no sample labels
            per_class = 1 - (2 * overlap + self.smooth) / (total + self.smooth)
            loss = loss + per_class[~merged].mean()
            labelled = (~merged[:, 1:]).to(per_class.dtype)
            self.per_structure = ((per_class[:, 1:].detach() * labelled).sum(0) / labelled.sum(0)).tolist()
        return loss


def _start_from(network, path) -> None:
    """Weights of a checkpoint (.pt) or a package's .safetensors into ``network``. Tensors whose
    shape differs (an output layer with another number of structures) start fresh, and say so:
    a cascade's later stage starts from the lungs network this way."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = load_checkpoint(path)["model"]
    own = network.state_dict()
    kept = {name: tensor for name, tensor in state.items() if name in own and own[name].shape == tensor.shape}
    if not kept:
        raise InputError("init_weights: no tensor fits this network", path)
    fresh = sorted(set(own) - set(kept))
    if fresh:
        print(f"init_weights: {len(kept)} tensors from {path.name}; {len(fresh)} start fresh ({', '.join(fresh[:4])})")
    network.load_state_dict({**own, **kept})


def _optimizer(parameters, settings: dict):
    lr, decay = float(settings["lr"]), float(settings["weight_decay"])
    if settings["name"] == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.99, nesterov=True, weight_decay=decay)
    kind = torch.optim.AdamW if settings["name"] == "adamw" else torch.optim.Adam
    return kind(parameters, lr=lr, weight_decay=decay)


def _schedule(optimizer, settings: dict, total_steps: int):
    warmup = int(settings["warmup_steps"])

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if settings["name"] == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if settings["name"] == "poly":
            return (1 - progress) ** 0.9
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def validate(network, cases, plan: ModelPlan, names: list[str], factor: int,
             device) -> tuple[list[list[float]], dict[str, np.ndarray]]:
    """Per case and structure (``names``) Dice on the model grid after the plan's inference and
    postprocessing (NaN for a structure the case leaves unlabelled), and the masks.
    ``factor``: the network's downsampling factor."""
    scores, predictions = [], {}
    for case in cases:
        probabilities = predict_probabilities(network, case.image, plan.inference, str(device), factor)
        masks = probabilities_to_masks(probabilities, names, plan.preprocessing.spacing, plan.inference.postprocessing)
        scored = case.label != IGNORE
        scores.append([math.nan if case.unlabelled.size and case.unlabelled[n - 1] else
                       dice(mask & scored, case.label == n) for n, mask in enumerate(masks, start=1)])
        predictions[case.case] = masks
    return scores, predictions


class Trainer:
    def __init__(self, config: dict, *, resume: bool, wandb_mode: str | None, progress: bool):
        self.config, self.progress, self.plan = config, progress, model_plan(config)
        self.ranks = Distributed()
        self.output = Path(config["output_dir"])
        self.checkpoints = self.output / CHECKPOINTS
        self.structures = config["data"]["structures"]
        self.seed = int(config["seed"])
        self._check_output(resume)
        self._seed_everything()
        self._load_data()
        self._build_model()
        self.epoch, self.step, self.best, self.best_epoch, self.stale, self.run_id = 0, 0, -1.0, -1, 0, None
        self.predictions: dict[str, np.ndarray] = {}
        self.provenance = tracking.provenance(config["data"]["csv"]) if self.ranks.main else {}
        if resume:
            self._resume()
        self.run = None
        if self.ranks.main:
            mode = tracking.resolve_mode(wandb_mode or config["wandb"]["mode"])
            self.run = tracking.start_run(config, mode, self.run_id, self.output)
            self.run_id = self.run.id if self.run is not None else None
            if self.run is not None:
                self.run.config.update({"provenance": self.provenance}, allow_val_change=True)

    def _check_output(self, resume: bool):
        last = self.checkpoints / "last.pt"
        if resume and not last.is_file():
            raise InputError("--resume: no checkpoint to resume from", last)
        if not resume and last.is_file():
            raise InputError("output_dir holds a run already: add --resume to continue it, or choose "
                             "another output_dir", self.output)
        if self.ranks.main:
            self.checkpoints.mkdir(parents=True, exist_ok=True)

    def _seed_everything(self):
        from monai.data import set_track_meta

        set_track_meta(False)  # plain tensors out of the transforms: faster, and nothing uses the metadata
        torch.manual_seed(self.seed)
        if self.config["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        else:
            torch.backends.cudnn.benchmark = True

    def _load_data(self):
        config = self.config
        records = read_dataset(config["data"]["csv"])
        train_records, validation_records = split(records, config["data"]["fold"])
        values = label_values(config["data"]["csv"], self.structures)
        settings = self.plan.preprocessing
        cache = Path(config["data"]["cache_dir"] or self.output / "cache")
        if self.ranks.main:  # rank 0 fills the cache, the others then read it
            for record in tqdm(records, desc="preprocess", unit="case", disable=not self.progress):
                prepare_case(record, settings, values, cache)
        self.ranks.barrier()
        prepare = lambda rs: [prepare_case(r, settings, values, cache, self.structures) for r in rs]  # noqa: E731
        self.train_cases, self.validation_cases = prepare(train_records), prepare(validation_records)
        self.dataset = PatchDataset(self.train_cases, train_transform(config, self.plan.inference), self.seed)
        self.sampler = torch.utils.data.DistributedSampler(
            self.dataset, num_replicas=self.ranks.world, rank=self.ranks.rank, shuffle=True, seed=self.seed)
        from monai.data import list_data_collate

        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_size=config["batch_size"], sampler=self.sampler, num_workers=config["workers"],
            collate_fn=list_data_collate, pin_memory=self.ranks.device.type == "cuda")

    def _build_model(self):
        config, device = self.config, self.ranks.device
        network = build_network(config["network"], out_channels=len(self.structures) + 1)
        if config["init_weights"]:  # fine-tuning; a resumed run then loads its own checkpoint over it
            _start_from(network, config["init_weights"])
        network = network.to(device)
        self.channels_last = bool(config["channels_last"]) and device.type == "cuda"
        if self.channels_last:
            network = network.to(memory_format=torch.channels_last_3d)
        self.network = network
        self.model = torch.nn.parallel.DistributedDataParallel(network) if self.ranks.world > 1 else network
        self.loss = SegmentationLoss(config["loss"])
        self.optimizer = _optimizer(network.parameters(), config["optimizer"])
        self.total_steps = config["epochs"] * len(self.loader)
        self.scheduler = _schedule(self.optimizer, config["schedule"], self.total_steps)
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                         if config["amp"] and device.type == "cuda" else nullcontext())

    def _resume(self):
        state = load_checkpoint(self.checkpoints / "last.pt")
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best, self.best_epoch, self.stale = state["best"], state["best_epoch"], state["stale"]
        self.run_id, self.provenance = state["wandb_run_id"], state["provenance"]
        if self.ranks.main:  # drop what the killed run left: half-written checkpoints, later history
            for partial in self.checkpoints.glob(".*.pt.*.pt"):  # atomic_path's temporary names
                partial.unlink()
            history = self.output / "history.jsonl"
            if history.is_file():
                kept = [line for line in history.read_text().splitlines()
                        if json.loads(line)["epoch"] < self.epoch]
                history.write_text("".join(line + "\n" for line in kept))

    def _record(self, entry: dict, wandb_entry: dict | None = None):
        with open(self.output / "history.jsonl", "a") as stream:
            stream.write(json.dumps(entry) + "\n")
        if self.run is not None:
            self.run.log(wandb_entry or {}, step=self.step)

    def _checkpoint(self, name: str):
        save_checkpoint(self.checkpoints / name, {
            "model": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "step": self.step,
            "best": self.best, "best_epoch": self.best_epoch, "stale": self.stale,
            "wandb_run_id": self.run_id, "config": self.config, "provenance": self.provenance,
        })

    def train_epoch(self) -> dict:
        self.sampler.set_epoch(self.epoch)
        self.dataset.set_epoch(self.epoch)
        torch.manual_seed(derived_seed(self.seed, self.epoch, -1))  # dropout and anything else in torch
        self.model.train()
        device, started, patches, losses, terms = self.ranks.device, time.perf_counter(), 0, [], []
        bar = tqdm(self.loader, desc=f"epoch {self.epoch + 1}/{self.config['epochs']}", unit="batch",
                   disable=not (self.progress and self.ranks.main), leave=False)
        for batch in bar:
            image = batch["image"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            if self.channels_last:
                image = image.to(memory_format=torch.channels_last_3d)
            self.optimizer.zero_grad(set_to_none=True)
            with self.autocast:
                loss = self.loss(self.model(image), label, batch["unlabelled"])
            loss.backward()
            self.optimizer.step()
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            total, count = self.ranks.sum([loss.item() * len(image), len(image)])
            mean = total / count
            patches += count
            losses.append(mean)
            if self.loss.per_structure is not None:
                terms.append(self.loss.per_structure)
            self.step += 1
            if self.ranks.main:
                self._record({"epoch": self.epoch, "step": self.step, "loss": mean, "lr": lr},
                             {"train/loss": mean, "train/lr": lr, "epoch": self.epoch})
            bar.set_postfix(loss=f"{mean:.4f}")
        seconds = time.perf_counter() - started
        per_structure = {}
        if terms:  # each structure's Dice loss over the batches that label it (rank 0's batches)
            terms = np.array(terms, dtype=float)
            for n, name in enumerate(self.structures):
                labelled = terms[:, n][~np.isnan(terms[:, n])]
                if len(labelled):
                    per_structure[f"train/dice_loss_{name}"] = float(labelled.mean())
        return {"train/epoch_loss": float(np.mean(losses)), "train/seconds_per_epoch": seconds,
                "train/samples_per_second": patches / seconds, **per_structure}

    def validate_epoch(self) -> dict:
        cases = self.validation_cases[self.ranks.rank::self.ranks.world]
        scores, self.predictions = validate(self.network.eval(), cases, self.plan, self.structures,
                                            downsampling_factor(self.config["network"]), self.ranks.device)
        scores = np.array(scores).reshape(-1, len(self.structures))
        sums = self.ranks.sum(list(np.nansum(scores, axis=0)) + list(np.sum(~np.isnan(scores), axis=0)))
        n = len(self.structures)
        per_structure = {name: sums[i] / sums[n + i] if sums[n + i] else float("nan")
                         for i, name in enumerate(self.structures)}
        result = {f"val/dice_{name}": value for name, value in per_structure.items()}
        result["val/mean_dice"] = float(np.nanmean(list(per_structure.values())))
        return result

    def _overlays(self) -> dict:
        import wandb
        from LungAutoSegLib.overlay import overlay_panel
        from LungAutoSegLib.structures import structure_entries
        from LungAutoSegLib.volume import Volume

        settings = self.plan.preprocessing
        low, high = settings.hu_window
        colours = [s["colour"] for s in structure_entries(self.structures)]
        images = []
        for case in self.validation_cases[: self.config["validation"]["image_cases"]]:
            if case.case not in self.predictions:  # validated by another rank
                continue
            grid = Volume.from_spacing(low + case.image * (high - low), settings.spacing, (0, 0, 0))
            predicted = np.zeros(case.label.shape, np.uint8)
            for value, mask in enumerate(self.predictions[case.case], start=1):
                predicted[mask] = value
            reference = np.where(case.label == IGNORE, 0, case.label)
            panel = overlay_panel(grid, grid.with_array(predicted), colours, grid.with_array(reference))
            images.append(wandb.Image(panel, caption=f"{case.case}: prediction filled, reference outlined; "
                                                     "axial, coronal, sagittal"))
        return {"val/overlays": images} if images else {}

    def fit(self) -> dict:
        config, has_validation = self.config, bool(self.validation_cases)
        interval = config["validation"]["interval"]
        while self.epoch < config["epochs"]:
            logged = self.train_epoch()
            validating = has_validation and ((self.epoch + 1) % interval == 0 or self.epoch + 1 == config["epochs"])
            if validating:
                logged.update(self.validate_epoch())
                score = logged["val/mean_dice"]
                improved = score > self.best
                self.best, self.best_epoch = (score, self.epoch) if improved else (self.best, self.best_epoch)
                self.stale = 0 if improved else self.stale + 1
                due = (self.epoch // interval) % config["validation"]["images_every"] == 0
                if self.run is not None and due:
                    logged.update(self._overlays())
            self.epoch += 1
            if self.ranks.main:
                self._record({"epoch": self.epoch - 1, **{k: v for k, v in logged.items() if k != "val/overlays"}},
                             logged)
                self._checkpoint("last.pt")
                if not has_validation or (validating and self.best_epoch == self.epoch - 1):
                    self._checkpoint("best.pt")
            patience = config["early_stop_patience"]
            if patience and self.stale >= patience:
                if self.ranks.main:
                    print(f"early stop: no improvement in {patience} validations (best {self.best:.4f} "
                          f"at epoch {self.best_epoch + 1})")
                break
        self.ranks.barrier()
        return {"epochs": self.epoch, "steps": self.step, "best_mean_dice": self.best,
                "best_epoch": self.best_epoch + 1, "checkpoint": str(self.checkpoints / "best.pt")}

    def close(self):
        if self.run is not None:
            self.run.finish()
        self.ranks.close()


def train(config: dict, *, resume: bool = False, wandb_mode: str | None = None, progress: bool = True) -> dict:
    """One run; then rank 0 packages the best checkpoint, evaluates it and logs both (``publish``)."""
    from .publish import publish_run

    trainer = Trainer(config, resume=resume, wandb_mode=wandb_mode, progress=progress)
    summary = trainer.fit()
    if trainer.ranks.main:
        summary.update(publish_run(trainer.checkpoints / "best.pt", config, summary, trainer.run))
    trainer.close()
    return summary
