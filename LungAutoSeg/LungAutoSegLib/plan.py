"""The model plan: how a CT is prepared for the network and how the network's output is read.

nnU-Net's lesson: these settings are data stored next to the weights (the package manifest's
``preprocessing`` and ``inference``), read through one typed, validated definition by
training, validation, the packager and inference alike, so the two sides cannot drift.
Defaults live here and nowhere else. Every size (patch, window, spacing) is given along
(i, j, k) = (L, P, S); the ``*_kji`` accessors give the array order.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from .errors import InputError

LARGEST_WINDOW_SIDE = 512  # voxels; more would not fit in memory anyway
HU_RANGE = (-2000.0, 5000.0)  # what an HU window may span (NaN and infinities fail this too)
PADDINGS = ("replicate", "constant", "reflect", "circular")
BLENDS = ("gaussian", "constant")
# The same padding in NumPy's (and so MONAI's array transforms') words: training pads its
# patches the way inference pads its windows.
NUMPY_PADDING = {"replicate": "edge", "constant": "constant", "reflect": "reflect", "circular": "wrap"}


@dataclass(frozen=True)
class Preprocessing:
    """Resampling onto the model grid (``preprocess``) and the HU window scaled to [0, 1]."""

    spacing: tuple[float, float, float]  # mm along L, P, S
    hu_window: tuple[float, float] = (-1000.0, 500.0)

    def __post_init__(self):
        if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise InputError(f"preprocessing spacing must be three positive numbers, got {self.spacing}")
        if (len(self.hu_window) != 2 or not all(HU_RANGE[0] <= h <= HU_RANGE[1] for h in self.hu_window)
                or self.hu_window[0] >= self.hu_window[1]):
            raise InputError(f"preprocessing hu_window must be [low, high] within {HU_RANGE[0]:g}..{HU_RANGE[1]:g} HU, "
                             f"got {self.hu_window}")

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        try:
            return cls(tuple(float(s) for s in data["spacing"]),
                       tuple(float(h) for h in data.get("hu_window", cls.hu_window)))
        except (KeyError, TypeError, ValueError) as error:
            raise InputError(f"invalid preprocessing settings {data!r}: {error}") from error

    def to_dict(self) -> dict:
        return {"orientation": "LPS axis-aligned", **asdict(self)}


@dataclass(frozen=True)
class Postprocessing:
    """Per structure on the model grid: keep the largest component, fill holes. On the CT's
    grid, ``edge_hu`` (null: off) redraws the edge at the CT's own resolution: a voxel that
    the interpolated mask leaves undecided (within one model voxel of the boundary) belongs
    to the structure when its HU is below ``edge_hu``. Why: at 2.5 mm the network cannot
    place a boundary that the CT draws at 1 mm; experts contour the lung to where the CT
    turns to tissue (see ``to_ct_grid``).

    ``pieces_ml`` (structure name -> ml): those structures keep, beside their largest component,
    every other piece of at least that volume that lies mostly on slices the larger kept pieces
    leave free (a tube crosses each slice once: a piece beside it is something else). Why: a tube the network breaks (an esophagus lost
    for 5 cm behind the aortic arch) is still two real pieces, where keeping only the largest
    drops the other (LUNG1-010: esophagus Dice 0.46 -> 0.59); the specks it must still lose
    were under 0.05 ml, the pieces over 7 ml.

    ``bridge_mm`` (structure name -> mm): those structures' gaps along the slice axis up to that
    length are filled, each missing slice drawn between the cross-sections at the gap's two
    ends (``postprocess.bridge_gaps``). Why: the esophagus and the spinal cord are continuous
    from end to end; a gap is the network losing the tube beside a tumour, never anatomy."""

    largest_component: bool = True
    fill_holes: bool = True
    edge_hu: float | None = None
    pieces_ml: dict[str, float] = field(default_factory=dict)
    bridge_mm: dict[str, float] = field(default_factory=dict)

    def min_piece_voxels(self, structure: str, voxel_mm3: float) -> int | None:
        """None: the largest component alone; else every piece of at least this many voxels."""
        ml = self.pieces_ml.get(structure)
        return None if ml is None else max(1, math.ceil(ml * 1000 / voxel_mm3))

    @classmethod
    def from_dict(cls, data) -> "Postprocessing":
        flags, per_structure = ("largest_component", "fill_holes"), ("pieces_ml", "bridge_mm")
        edge = data.get("edge_hu") if isinstance(data, dict) else None
        valid = (isinstance(data, dict) and set(data) <= {*flags, "edge_hu", *per_structure}
                 and all(isinstance(data[f], bool) for f in flags if f in data)
                 and (edge is None or (_is_number(edge) and -1000 < edge < 1000))
                 and all(_positive_per_structure(data.get(key, {})) for key in per_structure))
        if not valid:
            raise InputError(f"manifest inference postprocessing must map {', '.join(flags)} to true or false, "
                             f"edge_hu to null or a HU value between -1000 and 1000, pieces_ml (ml) and "
                             f"bridge_mm (mm) to structure names with positive numbers (got {data!r})")
        return cls(**{**data, "edge_hu": None if edge is None else float(edge),
                      **{key: {k: float(v) for k, v in data.get(key, {}).items()} for key in per_structure}})


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_per_structure(values) -> bool:
    return isinstance(values, dict) and all(isinstance(k, str) and _is_number(v) and v > 0 for k, v in values.items())


# Why these defaults. "patch_size": the training patch; "window": the largest sliding window.
# An image at least as large as the patch gets windows as large as the image (rounded up to
# the network's downsampling factor) up to "window": a typical thorax at 2.5 mm is one
# window, and on a 2-core CPU one 144x144x128 pass takes 0.8 s where twelve 96x96x64 windows
# took 5.3 s. [208, 208, 160] covers a 52 cm field of view and 40 cm of patient in about
# 1.1 GB of RAM. A slab thinner than the patch is seen the way training saw it, through
# patch-sized windows: a 6-slice LIDC slab in one 144x144x64 window lost its lungs (Lung_R
# Dice 0.96 -> 0.77). "padding": how the image is extended where a window overhangs it.
# "replicate" repeats the edge slices, so a thin slab looks like more of the same thorax to
# the network; padding with air made it lose the slab's first and last slices (Lung_R Dice
# 0.66 -> 0.95 on a 16-slice LIDC slab). Training pads its patches the same way.
@dataclass(frozen=True)
class Inference:
    patch_size: tuple[int, int, int] = (96, 96, 96)  # voxels along i, j, k
    window: tuple[int, int, int] = (208, 208, 160)   # voxels along i, j, k
    overlap: float = 0.25
    blend: str = "gaussian"
    padding: str = "replicate"
    activation: str = "softmax"
    threshold: str = "argmax"
    postprocessing: Postprocessing = field(default_factory=Postprocessing)

    @property
    def patch_kji(self) -> tuple[int, int, int]:
        return tuple(reversed(self.patch_size))

    @property
    def window_kji(self) -> tuple[int, int, int]:
        return tuple(reversed(self.window))

    @property
    def numpy_padding(self) -> str:
        return NUMPY_PADDING[self.padding]

    @classmethod
    def from_dict(cls, data: dict, factor: int) -> "Inference":
        """Validated settings over the defaults; ``factor``: the network's downsampling factor,
        which every patch and window side must be a multiple of. Unknown keys are ignored (a
        newer manifest may carry settings this version does not use)."""
        known = {f.name for f in fields(cls)}
        settings = {**asdict(cls()), **{k: v for k, v in data.items() if k in known}}
        for key in ("patch_size", "window"):
            size = settings[key]
            if not (isinstance(size, (list, tuple)) and len(size) == 3 and all(
                    isinstance(n, int) and not isinstance(n, bool) and 0 < n <= LARGEST_WINDOW_SIDE and n % factor == 0
                    for n in size)):
                raise InputError(f"manifest inference {key} must be 3 positive multiples of {factor} up to "
                                 f"{LARGEST_WINDOW_SIDE} (got {size!r})")
        overlap = settings["overlap"]
        if not (isinstance(overlap, (int, float)) and not isinstance(overlap, bool) and 0 <= overlap < 1):
            raise InputError(f"manifest inference overlap must be in [0, 1) (got {overlap!r})")
        for key, allowed in (("padding", PADDINGS), ("blend", BLENDS), ("activation", ("softmax",)),
                             ("threshold", ("argmax",))):
            if settings[key] not in allowed:
                raise InputError(f"manifest inference {key} must be one of {', '.join(allowed)} "
                                 f"(got {settings[key]!r})")
        return cls(**{**settings, "patch_size": tuple(settings["patch_size"]), "window": tuple(settings["window"]),
                      "overlap": float(overlap), "postprocessing": Postprocessing.from_dict(settings["postprocessing"])})

    def to_dict(self) -> dict:
        data = asdict(self)
        for key in ("edge_hu", "pieces_ml", "bridge_mm"):  # manifests from before these settings stay as written
            if not data["postprocessing"][key]:
                del data["postprocessing"][key]
        return {**data, "patch_size": list(self.patch_size), "window": list(self.window)}


@dataclass(frozen=True)
class ModelPlan:
    """What a model package's manifest says about preprocessing and inference."""

    preprocessing: Preprocessing
    inference: Inference

    @classmethod
    def from_manifest(cls, manifest: dict, factor: int) -> "ModelPlan":
        return cls(Preprocessing.from_dict(manifest["preprocessing"]),
                   Inference.from_dict(manifest["inference"], factor))

    def to_manifest(self) -> dict:
        return {"preprocessing": self.preprocessing.to_dict(), "inference": self.inference.to_dict()}
