"""Training augmentation as MONAI dictionary transforms on model-grid arrays (channel, k, j, i).

Arrays arrive already preprocessed (``LungAutoSegLib.preprocess``), so augmentation is the
only thing here. Left-right flips are off by default; when on, they swap every *_R label
with its *_L partner, because a flipped right lung is a left lung.
"""
from __future__ import annotations

import math

import numpy as np
from monai.transforms import (Compose, MapTransform, RandAffined, RandCropByPosNegLabeld, RandGaussianNoised,
                              RandomizableTransform, RandScaleIntensityd, RandShiftIntensityd, SpatialPadd)

I_AXIS = 3  # (channel, k, j, i): i runs from patient right to patient left on the model grid


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


def train_transform(config: dict) -> Compose:
    patch = tuple(int(n) for n in reversed(config["patch_size"]))  # (i, j, k) -> array (k, j, i)
    aug = config["augmentation"]
    keys = ["image", "label"]
    steps = []
    if aug["flip_left_right"]:
        steps.append(RandFlipLeftRightd(left_right_pairs(config["data"]["structures"])))
    steps += [
        SpatialPadd(keys, spatial_size=patch, mode="edge"),  # as inference pads: repeat the edge slices
        RandCropByPosNegLabeld(keys, label_key="label", spatial_size=patch, pos=2, neg=1,
                               num_samples=config["samples_per_case"]),
        RandAffined(keys, prob=aug["probability"], rotate_range=[math.radians(aug["rotate_degrees"])] * 3,
                    scale_range=[aug["scale"]] * 3, mode=("bilinear", "nearest"), padding_mode="border"),
        RandScaleIntensityd("image", factors=aug["intensity_scale"], prob=aug["probability"]),
        RandShiftIntensityd("image", offsets=aug["intensity_shift"], prob=aug["probability"]),
        RandGaussianNoised("image", std=aug["noise_std"], prob=aug["probability"]),
    ]
    return Compose(steps)
