"""The inference core, ``predict``: CT volume + model package -> label map on the CT's own grid.

The package's plan (``plan.ModelPlan``) says how: ``preprocess`` onto the model grid, the
network through one window or MONAI's sliding window, ``postprocess`` on the model grid,
``to_ct_grid`` back. Training's validation (``predict_probabilities``), ``lungautoseg-train
evaluate``, ``lungautoseg segment`` and the Slicer module all run these functions, so what
is measured is what users get.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .cascade import cropped
from .errors import InputError
from .model_package import CascadePackage, ModelPackage
from .plan import Inference, Postprocessing
from .postprocess import probabilities_to_masks
from .preprocess import image_to_model
from .review import Review, review
from .to_ct_grid import keep_largest_components, label_map, probability_maps
from .volume import Volume


@dataclass
class Segmentation:
    labels: Volume                      # uint8 on the CT's grid; value n = structures[n - 1]
    structures: list[dict]
    probabilities: np.ndarray | None = None  # (n, k, j, i) float32 on the CT's grid, on request
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    review: Review | None = None  # on request: where the model is unsure
    overlaps: dict[tuple[str, str], int] = field(default_factory=dict)  # a cascade's (winner, loser): voxels


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r} (auto, cpu or cuda)")
    return device


def window_size(image_shape, settings: Inference, multiple: int) -> tuple[int, ...]:
    """The sliding window (k, j, i) for an image of ``image_shape`` (k, j, i): the image
    itself rounded up to ``multiple`` (the network's downsampling factor), within the
    settings' patch and window (see ``plan.Inference`` for why)."""
    patch = settings.patch_kji
    if any(n < p for n, p in zip(image_shape, patch)):
        return patch
    fitted = [-(-int(n) // multiple) * multiple for n in image_shape]
    return tuple(min(n, high) for n, high in zip(fitted, settings.window_kji))


def predict_probabilities(network, image: np.ndarray, settings: Inference, device: str, multiple: int):
    """Softmax probabilities (classes, k, j, i) of one preprocessed image, sliding window.
    ``multiple``: the network's downsampling factor (``networks.downsampling_factor``)."""
    import torch

    roi_size = window_size(image.shape, settings, multiple)
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None].to(device)
    with torch.inference_mode():
        if all(r >= n for r, n in zip(roi_size, image.shape)):
            logits = _one_window(network, tensor, roi_size, settings.padding)
        else:
            from monai.inferers import sliding_window_inference

            logits = sliding_window_inference(tensor, roi_size, sw_batch_size=1, predictor=network,
                                              overlap=settings.overlap, mode=settings.blend,
                                              padding_mode=settings.padding)
        return torch.softmax(logits.float(), dim=1)[0]


def _one_window(network, tensor, roi_size, padding: str):
    """What MONAI's sliding window gives when one window covers the image (the image padded
    evenly on both sides, the prediction cropped back), without importing MONAI."""
    import torch.nn.functional as F

    pad, crop = [], []
    for n, r in zip(reversed(tensor.shape[2:]), reversed(roi_size)):  # F.pad wants the last axis first
        before = (r - n) // 2
        pad += [before, r - n - before]
        crop.insert(0, slice(before, before + n))
    padded = F.pad(tensor, pad, mode=padding) if any(pad) else tensor
    return network(padded)[(slice(None), slice(None), *crop)]


def on_model_grid(ct: Volume, package: ModelPackage, network, device: str, lap=lambda stage, fraction: None):
    """The model-grid half of ``predict``: (probabilities, structure masks, the model grid)."""
    image, grid = image_to_model(ct, package.plan.preprocessing)
    lap("preprocess", 0.3)
    probabilities = predict_probabilities(network, image, package.plan.inference, device, package.downsampling_factor)
    lap("inference", 0.8)
    masks = probabilities_to_masks(probabilities, package.structure_names, grid.spacing,
                                   package.plan.inference.postprocessing)
    lap("postprocess", 0.85)
    return probabilities, masks, grid


def labels_on_ct(masks: np.ndarray, grid: Volume, ct: Volume, steps: Postprocessing, names: list[str]) -> np.ndarray:
    """The CT-grid half of ``predict``: model-grid masks (of ``names``) -> the label map on the
    CT's grid. Apart so that ``lungautoseg-train tune-edge`` can try many ``edge_hu`` on one run."""
    return keep_largest_components(label_map(masks, grid, ct, steps.edge_hu), names, ct.voxel_mm3, steps)


def predict(ct: Volume, package: ModelPackage | CascadePackage, *, device: str = "auto", network=None,
            with_probabilities: bool = False, with_review: bool = False, progress=None,
            structures: list[str] | None = None) -> Segmentation:
    """Label the package's structures on ``ct``. ``progress(stage, fraction)`` is called per stage.
    ``structures``: those wanted (default all); a cascade skips the stages they do not need."""
    if isinstance(package, CascadePackage):
        return _predict_cascade(ct, package, device, network, with_probabilities, with_review, progress, structures)
    report = progress or (lambda stage, fraction: None)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def lap(stage: str, fraction: float):
        nonlocal start
        now = time.perf_counter()
        timings[stage] = round(now - start, 3)
        start = now
        report(stage, fraction)

    device = resolve_device(device)
    network = network if network is not None else package.load_network(device)
    lap("load_model", 0.1)
    probabilities, masks, grid = on_model_grid(ct, package, network, device, lap)
    labels = ct.with_array(labels_on_ct(masks, grid, ct, package.plan.inference.postprocessing,
                                        package.structure_names))
    structures = probabilities[1:].cpu().numpy() if with_probabilities or with_review else None
    on_ct = probability_maps(structures, grid, ct) if with_probabilities else None
    lap("resample", 0.95 if with_review else 1.0)
    doubt = None
    if with_review:
        doubt = review(structures, masks, package.structure_names, grid, ct)
        lap("review", 1.0)
    return Segmentation(labels, package.structures, on_ct, timings, device, doubt)


def needed_stages(package: CascadePackage, structures: list[str] | None) -> list[bool]:
    """Per stage: does it make a wanted structure, or one a later needed stage crops around?"""
    wanted = set(structures or package.structure_names)
    needed = [False] * len(package.stages)
    for n in reversed(range(len(package.stages))):
        stage = package.stages[n]
        needed[n] = bool(wanted & set(stage.package.structure_names))
        if needed[n] and stage.crop is not None:
            wanted |= set(stage.crop.around)
    return needed


def _predict_cascade(ct: Volume, package: CascadePackage, device, networks, with_probabilities, with_review,
                     progress, structures) -> Segmentation:
    """Each needed stage on its crop of ``ct``, its labels written under the cascade's values. A
    later stage's structure wins a voxel an earlier one also claimed: it was drawn finer."""
    device = resolve_device(device)
    report = progress or (lambda stage, fraction: None)
    networks = networks if networks is not None else [None] * len(package.stages)
    labels = np.zeros(ct.array.shape, np.uint8)
    probabilities = np.zeros((len(package.structures), *ct.array.shape), np.float32) if with_probabilities else None
    doubt, ranges, timings, overlaps = np.zeros(ct.array.shape, np.uint8), {}, {}, {}
    needed = needed_stages(package, structures)
    count = sum(needed)
    for order, (stage, network) in enumerate((s, n) for s, n, use in zip(package.stages, networks, needed) if use):
        region = tuple(slice(0, n) for n in ct.array.shape)
        if stage.crop is not None:
            around = np.isin(labels, [package.label_of(name) for name in stage.crop.around])
            region = stage.crop.region(around, ct)
        part = predict(cropped(ct, region), stage.package, device=device, network=network,
                       with_probabilities=with_probabilities, with_review=with_review,
                       progress=lambda name, done: report(name, (order + done) / count))
        values = np.array([0] + [package.label_of(n) for n in stage.package.structure_names], np.uint8)
        own = values[part.labels.array]
        _count_overlaps(own, labels[region], package.structure_names, overlaps)
        labels[region] = np.where(own > 0, own, labels[region])
        for name, seconds in part.timings.items():
            timings[name] = round(timings.get(name, 0.0) + seconds, 3)
        channels = [package.label_of(n) - 1 for n in stage.package.structure_names]
        if with_probabilities:
            probabilities[(channels, *region)] = part.probabilities
        if with_review:
            doubt[region] = np.maximum(doubt[region], part.review.map.array)
            for name, found in part.review.ranges.items():  # slices counted on the whole CT
                ranges[name] = [{**r, "slices": [k + region[0].start for k in r["slices"]]} for r in found]
    review = Review(ct.with_array(doubt), ranges) if with_review else None
    return Segmentation(ct.with_array(labels), package.structures, probabilities, timings, device, review, overlaps)


def _count_overlaps(new: np.ndarray, old: np.ndarray, names: list[str], counts: dict) -> None:
    """Voxels that ``new`` (a later stage's labels) claims from another structure in ``old``."""
    both = (new > 0) & (old > 0) & (new != old)
    if both.any():
        pairs, voxels = np.unique(new[both].astype(np.int32) * 256 + old[both], return_counts=True)
        for pair, n in zip(pairs, voxels):
            key = (names[pair // 256 - 1], names[pair % 256 - 1])
            counts[key] = counts.get(key, 0) + int(n)
