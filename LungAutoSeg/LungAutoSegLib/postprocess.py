"""From the network's probabilities to one clean mask per structure, on the model grid."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .plan import Postprocessing


def probabilities_to_masks(probabilities, names: list[str], voxel_mm3: float,
                           steps: Postprocessing = Postprocessing()) -> np.ndarray:
    """Argmax (the multi-class threshold), then per structure (``names``, in channel order) the
    largest component (and the pieces ``steps.pieces_ml`` keeps), holes filled."""
    winner = np.argmax(probabilities.cpu().numpy(), axis=0).astype(np.uint8)  # 5x faster than torch's argmax(dim=0)
    masks = np.stack([winner == value for value in range(1, probabilities.shape[0])])
    return np.stack([clean_mask(mask, steps.largest_component, steps.fill_holes,
                                steps.min_piece_voxels(name, voxel_mm3)) for mask, name in zip(masks, names)])


def clean_mask(mask: np.ndarray, largest_component: bool, fill_holes: bool,
               min_piece_voxels: int | None = None) -> np.ndarray:
    """``largest_component``: keep the largest piece, and with ``min_piece_voxels`` every piece
    at least that large too."""
    if not mask.any():
        return mask
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    if largest_component:
        pieces = sitk.RelabelComponentImageFilter()  # numbered by size, largest first
        numbered = pieces.Execute(sitk.ConnectedComponent(image, True))
        sizes = pieces.GetSizeOfObjectsInPixels()
        kept = 1 if min_piece_voxels is None else max(1, sum(size >= min_piece_voxels for size in sizes))
        image = (numbered > 0) & (numbered <= kept)
    if fill_holes:
        image = sitk.BinaryFillhole(image, fullyConnected=False, foregroundValue=1)
    return sitk.GetArrayFromImage(image).astype(bool)
