"""Augmentation keeps the patient's right on the right (a flip swaps the labels with it)."""
import numpy as np
import pytest

import thorax_phantom as tp
from LungAutoSegLib.plan import Preprocessing
from lungautoseg_train.config import load_config, model_plan
from lungautoseg_train.data import prepare_case, read_dataset
from lungautoseg_train.transforms import RandFlipLeftRightd, left_right_pairs, train_transform


GRID = dict(shape_ijk=(64, 64, 24), spacing=(5.5, 5.5, 10.0))


def _side_by_label(sample) -> tuple[float, float]:
    label = np.asarray(sample["label"])[0]
    return np.argwhere(label == 1)[:, 2].mean(), np.argwhere(label == 2)[:, 2].mean()


@pytest.mark.parametrize("flip", [False, True])
def test_augmentation_never_turns_a_right_lung_into_a_left_one(tmp_path, flip):
    csv = tp.write_nifti_dataset(tmp_path, [4], folds=1, **GRID)
    case = prepare_case(read_dataset(csv)[0], Preprocessing((6.0, 6.0, 6.0)), [1, 2], tmp_path / "cache")
    config = load_config(None, [f"data.csv={csv}", "patch_size=[64, 64, 48]", "samples_per_case=1",
                                f"augmentation.flip_left_right={flip}", "augmentation.probability=1.0"])
    transform = train_transform(config, model_plan(config).inference)
    for seed in range(12):
        transform.set_random_state(seed=seed)
        sample = transform({"image": case.image[None], "label": case.label[None]})[0]
        right, left = _side_by_label(sample)
        assert right < left  # label 1 (Lung_R) stays at low i, the patient's right
    if flip:  # the flip really happens: the image is mirrored and the labels swapped with it
        flip_step = RandFlipLeftRightd(left_right_pairs(["Lung_R", "Lung_L"]), prob=1.0)
        mirrored = flip_step({"image": case.image[None], "label": case.label[None]})
        assert np.array_equal(mirrored["image"][0], case.image[:, :, ::-1])
        assert np.array_equal(mirrored["label"][0] == 1, case.label[:, :, ::-1] == 2)
    assert left_right_pairs(["Lung_R", "Lung_L", "Heart"]) == {1: 2, 2: 1}
