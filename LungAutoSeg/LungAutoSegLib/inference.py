"""The inference core: CT volume + model package -> label map on the CT's own grid.

Training's validation, ``lungautoseg-train evaluate``, ``lungautoseg segment`` and the
Slicer module all run these functions, so what is measured is what users get.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .model_package import ModelPackage
from .networks import downsampling_factor
from .preprocess import image_to_model, masks_to_ct, resample
from .volume import Volume, bounding_box

# "patch_size" and "window": the training patch and the largest sliding window (voxels along
# i, j, k; multiples of the network's downsampling factor). An image at least as large as the
# patch gets windows as large as the image (rounded up to the factor) up to "window": a
# typical thorax at 2.5 mm is one window, and on a 2-core CPU one 144x144x128 pass takes
# 0.8 s where twelve 96x96x64 windows took 5.3 s. [208, 208, 160] covers a 52 cm field of
# view and 40 cm of patient in about 1.1 GB of RAM. A slab thinner than the patch is seen
# the way training saw it, through patch-sized windows: a 6-slice LIDC slab in one
# 144x144x64 window lost its lungs (Lung_R Dice 0.96 -> 0.77).
# "padding": how the image is extended where a window overhangs it. "replicate" repeats the
# edge slices, so a thin slab looks like more of the same thorax to the network; padding
# with air made it lose the slab's first and last slices (Lung_R Dice 0.66 -> 0.95 on a
# 16-slice LIDC slab). Training pads the same way (transforms.py).
DEFAULT_INFERENCE = {"patch_size": [96, 96, 96], "window": [208, 208, 160], "overlap": 0.25, "blend": "gaussian",
                     "padding": "replicate", "activation": "softmax", "threshold": "argmax",
                     "postprocessing": {"largest_component": True, "fill_holes": True}}


@dataclass
class Segmentation:
    labels: Volume                      # uint8 on the CT's grid; value n = structures[n - 1]
    structures: list[dict]
    probabilities: np.ndarray | None = None  # (n, k, j, i) float32 on the CT's grid, on request
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA GPU is available")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r} (auto, cpu or cuda)")
    return device


def window_size(image_shape, patch, largest, multiple: int) -> tuple[int, ...]:
    """The sliding window (k, j, i) for an image of ``image_shape`` (k, j, i); ``patch`` and
    ``largest`` are (i, j, k). See DEFAULT_INFERENCE for why."""
    patch = [int(n) for n in reversed(patch)]
    if any(n < p for n, p in zip(image_shape, patch)):
        return tuple(patch)
    fitted = [-(-int(n) // multiple) * multiple for n in image_shape]
    return tuple(min(n, int(high)) for n, high in zip(fitted, reversed(largest)))


def predict_probabilities(network, image: np.ndarray, inference: dict, device: str, multiple: int):
    """Softmax probabilities (classes, k, j, i) of one preprocessed image, sliding window.
    ``multiple``: the network's downsampling factor (``networks.downsampling_factor``)."""
    import torch

    settings = {**DEFAULT_INFERENCE, **inference}
    roi_size = window_size(image.shape, settings["patch_size"], settings["window"], multiple)
    tensor = torch.from_numpy(np.ascontiguousarray(image))[None, None].to(device)
    with torch.inference_mode():
        if all(r >= n for r, n in zip(roi_size, image.shape)):
            logits = _one_window(network, tensor, roi_size, settings["padding"])
        else:
            from monai.inferers import sliding_window_inference

            logits = sliding_window_inference(tensor, roi_size, sw_batch_size=1, predictor=network,
                                              overlap=float(settings["overlap"]), mode=settings["blend"],
                                              padding_mode=settings["padding"])
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


def probabilities_to_masks(probabilities, postprocessing: dict | None = None) -> np.ndarray:
    """Argmax (the multi-class threshold), then per structure the largest component, holes filled."""
    winner = np.argmax(probabilities.cpu().numpy(), axis=0).astype(np.uint8)  # 5x faster than torch's argmax(dim=0)
    steps = _postprocessing_steps(postprocessing)
    masks = np.stack([winner == value for value in range(1, probabilities.shape[0])])
    return np.stack([_clean(mask, **steps) for mask in masks])


def _postprocessing_steps(postprocessing: dict | None) -> dict:
    return {**DEFAULT_INFERENCE["postprocessing"], **(postprocessing or {})}


def _clean(mask: np.ndarray, largest_component: bool, fill_holes: bool) -> np.ndarray:
    if not mask.any():
        return mask
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    if largest_component:
        image = sitk.RelabelComponent(sitk.ConnectedComponent(image, True), sortByObjectSize=True) == 1
    if fill_holes:
        image = sitk.BinaryFillhole(image, fullyConnected=False, foregroundValue=1)
    return sitk.GetArrayFromImage(image).astype(bool)


def tidy_on_ct(labels: np.ndarray, count: int, postprocessing: dict | None = None) -> np.ndarray:
    """Keep each structure's largest component once more on the CT grid, in place, inside its
    box: interpolating a one-piece mask can leave specks (five of 4-7 voxels beside a 2.3 l
    lung). Holes are not filled again: interpolating filled masks added none there (0 voxels
    for either lung), and filling costs 0.25 s per lung on a 512x512 CT."""
    steps = _postprocessing_steps(postprocessing)
    if not steps["largest_component"]:
        return labels
    for value in range(1, count + 1):
        box = bounding_box(labels == value)
        if box is None:
            continue
        block = labels[box]  # a view: changes land in labels
        mine = block == value
        block[mine & ~_clean(mine, largest_component=True, fill_holes=False)] = 0
    return labels


def segment(ct: Volume, package: ModelPackage, *, device: str = "auto", network=None,
            with_probabilities: bool = False, progress=None) -> Segmentation:
    """Label the package's structures on ``ct``. ``progress(stage, fraction)`` is called per stage."""
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
    image, grid = image_to_model(ct, package.preprocessing)
    lap("preprocess", 0.3)
    probabilities = predict_probabilities(network, image, package.inference, device,
                                          downsampling_factor(package.manifest["network"]))
    lap("inference", 0.8)
    masks = probabilities_to_masks(probabilities, package.inference.get("postprocessing"))
    lap("postprocess", 0.85)
    on_ct_grid = masks_to_ct(masks, grid, ct)
    labels = ct.with_array(tidy_on_ct(on_ct_grid, len(masks), package.inference.get("postprocessing")))
    on_ct = None
    if with_probabilities:
        channels = probabilities[1:].cpu().numpy()
        on_ct = np.stack([resample(grid.with_array(channel), ct) for channel in channels])
    lap("resample", 1.0)
    return Segmentation(labels, package.structures, on_ct, timings, device)
