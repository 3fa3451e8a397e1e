"""Training augmentation as MONAI dictionary transforms on model-grid arrays (channel, k, j, i).

Arrays arrive already preprocessed (``LungAutoSegLib.preprocess``), so augmentation is the
only thing here. Left-right flips are off by default; when on, they swap every *_R label
with its *_L partner, because a flipped right lung is a left lung. Label ``IGNORE`` (255)
marks voxels the loss leaves out (around a tumour; slices a simulated scan end removed).

Beyond geometry, intensity and noise, three augmentations cover what real planning CTs
do and the phantoms and silver cases did not: denser dependent lung (the posterior band
of a supine patient), sharp and smooth reconstruction kernels, and a scan that ends inside
the lung (partial coverage: the slices past the end are the edge slice repeated, as
inference pads).
"""
from __future__ import annotations

import math

import numpy as np
from monai.transforms import (Compose, MapTransform, RandAffined, RandCropByLabelClassesd, RandCropByPosNegLabeld,
                              RandGaussianNoised, RandomizableTransform, RandScaleIntensityd, RandShiftIntensityd,
                              SpatialPadd)
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.plan import Inference

from .data import IGNORE

I_AXIS = 3  # (channel, k, j, i): i runs from patient right to patient left on the model grid
J_AXIS = 2  # j runs from anterior to posterior, k from inferior to superior
LUNG_LEVEL = 0.4  # -400 HU in the [-1000, 500] window: below it a voxel is aerated


def left_right_pairs(structures: list[str]) -> dict[int, int]:
    """Label value -> its mirror partner (Lung_R <-> Lung_L); structures without one map to themselves."""
    value = {name: n for n, name in enumerate(structures, start=1)}
    pairs = {}
    for name, n in value.items():
        for own, other in (("_R", "_L"), ("_L", "_R")):
            if name.endswith(own) and name[: -len(own)] + other in value:
                pairs[n] = value[name[: -len(own)] + other]
    return pairs


class RandFlipLeftRightd(RandomizableTransform, MapTransform):
    """Mirror patient left-right and swap paired labels, so anatomy stays true."""

    def __init__(self, pairs: dict[int, int], prob: float = 0.5):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, ["image", "label"])
        self.lookup = np.arange(256, dtype=np.uint8)
        for value, partner in pairs.items():
            self.lookup[value] = partner

    def __call__(self, data: dict) -> dict:
        self.randomize(None)
        if not self._do_transform:
            return data
        out = dict(data)
        out["image"] = np.flip(np.asarray(data["image"]), axis=I_AXIS).copy()
        label = np.flip(np.asarray(data["label"]), axis=I_AXIS)
        out["label"] = self.lookup[label.astype(np.uint8)]
        return out


def _like(array: np.ndarray, original):
    """``array`` as the type ``original`` came in (MONAI's transforms hand on torch tensors)."""
    import torch

    return torch.as_tensor(array) if isinstance(original, torch.Tensor) else array


class RandDependentDensityd(RandomizableTransform, MapTransform):
    """Raise aerated voxels' density along the gravity axis (posterior, or anterior for prone),
    by up to ``max_shift`` of the window at the dependent edge of the patch."""

    def __init__(self, prob: float, max_shift: float):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, ["image"])
        self.max_shift = max_shift

    def __call__(self, data: dict) -> dict:
        self.randomize(None)
        if not self._do_transform:
            return data
        image = np.asarray(data["image"], dtype=np.float32)
        n = image.shape[J_AXIS]
        ramp = np.clip((np.arange(n) - self.R.uniform(0.2, 0.7) * n) / (0.3 * n), 0.0, 1.0)
        if self.R.random() < 0.2:  # prone: the anterior lung is dependent
            ramp = ramp[::-1]
        shift = self.R.uniform(0.3, 1.0) * self.max_shift * ramp.astype(np.float32)[None, None, :, None]
        out = dict(data)
        out["image"] = _like(np.where(image < LUNG_LEVEL, image + shift, image).astype(np.float32), data["image"])
        return out


class RandKerneld(RandomizableTransform, MapTransform):
    """Another reconstruction kernel: Gaussian smoothing, or an unsharp mask that sharpens."""

    def __init__(self, prob: float):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, ["image"])

    def __call__(self, data: dict) -> dict:
        from scipy import ndimage

        self.randomize(None)
        if not self._do_transform:
            return data
        image = np.asarray(data["image"], dtype=np.float32)
        sigma = self.R.uniform(0.4, 1.0)
        blurred = ndimage.gaussian_filter(image, sigma=(0, 0.3 * sigma, sigma, sigma))
        out = dict(data)
        sharpened = image + self.R.uniform(0.5, 1.5) * (image - blurred)
        out["image"] = _like(blurred if self.R.random() < 0.5 else sharpened, data["image"])
        return out


class RandScanEndd(RandomizableTransform, MapTransform):
    """Partial coverage: the scan ends at a random slice of the patch; slices past it repeat that
    slice (as inference pads) and their labels are ignored."""

    def __init__(self, prob: float):
        RandomizableTransform.__init__(self, prob)
        MapTransform.__init__(self, ["image", "label"])

    def __call__(self, data: dict) -> dict:
        self.randomize(None)
        if not self._do_transform:
            return data
        image, label = np.array(data["image"]), np.array(data["label"])
        n = image.shape[1]
        end = int(self.R.randint(n // 4, 3 * n // 4))
        if self.R.random() < 0.5:  # the scan's top end
            image[:, end + 1:], label[:, end + 1:] = image[:, end:end + 1], IGNORE
        else:
            image[:, :end], label[:, :end] = image[:, end:end + 1], IGNORE
        return {**data, "image": _like(image, data["image"]), "label": _like(label, data["label"])}


def train_transform(config: dict, plan: Inference) -> Compose:
    """Patches of the plan's size, padded the way inference pads its windows, augmented as the
    config's ``augmentation`` says."""
    patch = plan.patch_kji
    aug = config["augmentation"]
    keys = ["image", "label"]
    steps = []
    if aug["flip_left_right"]:
        steps.append(RandFlipLeftRightd(left_right_pairs(config["data"]["structures"])))
    ratios = config["class_ratios"]
    if ratios is not None and len(ratios) != len(config["data"]["structures"]) + 1:
        raise InputError(f"class_ratios needs one ratio for background and one per structure "
                         f"({len(config['data']['structures']) + 1}), got {ratios}")
    crop = (RandCropByPosNegLabeld(keys, label_key="label", spatial_size=patch, pos=2, neg=1,
                                   num_samples=config["samples_per_case"]) if ratios is None else
            RandCropByLabelClassesd(keys, label_key="label", spatial_size=patch, ratios=list(ratios),
                                    num_classes=len(ratios), num_samples=config["samples_per_case"], warn=False))
    steps += [
        SpatialPadd(keys, spatial_size=patch, mode=plan.numpy_padding),
        crop,
        RandAffined(keys, prob=aug["probability"], rotate_range=[math.radians(aug["rotate_degrees"])] * 3,
                    scale_range=[aug["scale"]] * 3, mode=("bilinear", "nearest"), padding_mode="border"),
        RandScaleIntensityd("image", factors=aug["intensity_scale"], prob=aug["probability"]),
        RandShiftIntensityd("image", offsets=aug["intensity_shift"], prob=aug["probability"]),
        RandGaussianNoised("image", std=aug["noise_std"], prob=aug["probability"]),
    ]
    if aug["dependent_density"]:
        steps.append(RandDependentDensityd(aug["probability"], aug["dependent_density"]))
    if aug["kernel_probability"]:
        steps.append(RandKerneld(aug["kernel_probability"]))
    if aug["scan_end_probability"]:
        steps.append(RandScanEndd(aug["scan_end_probability"]))
    return Compose(steps)
