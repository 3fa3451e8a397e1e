"""The review map (``--review``): doubt where the model is split, none where it is sure, on the CT's
grid; slice ranges that point at the doubtful part of a structure and say where it lies."""
import json

import numpy as np
import pytest

from LungAutoSegLib.cli import example_ct, main as engine
from LungAutoSegLib.image_io import read_volume
from LungAutoSegLib.review import doubt, doubt_ranges, summary_lines
from LungAutoSegLib.volume import Volume


def test_doubt_is_one_where_the_model_is_split_and_zero_where_it_is_sure():
    assert np.allclose(doubt(np.array([0.0, 0.25, 0.5, 0.75, 1.0])), [0.0, 0.5, 1.0, 0.5, 0.0])


def _cube_with_a_blurred_corner():
    """A 40 mm cube on a 2 mm model grid: a crisp edge everywhere, and on its lowest four slices a
    wide band of doubt at the back (+y in LPS: posterior)."""
    grid = Volume.from_spacing(np.zeros((40, 40, 40), np.uint8), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    mask = np.zeros(grid.array.shape, bool)
    mask[10:30, 10:30, 10:30] = True
    edge = mask & ~np.pad(mask[1:-1, 1:-1, 1:-1] & mask[:-2, 1:-1, 1:-1] & mask[2:, 1:-1, 1:-1]
                          & mask[1:-1, :-2, 1:-1] & mask[1:-1, 2:, 1:-1] & mask[1:-1, 1:-1, :-2]
                          & mask[1:-1, 1:-1, 2:], 1)
    structure_doubt = edge.astype(np.float32)
    structure_doubt[10:14, 26:34, 10:30] = 0.9  # k 10-13: the base; j 26-33: posterior
    return grid, mask, structure_doubt


def test_the_ranges_point_at_the_blurred_part_and_say_where_it_lies():
    grid, mask, structure_doubt = _cube_with_a_blurred_corner()
    ct = Volume.from_spacing(np.zeros((80, 80, 80), np.int16), (1.0, 1.0, 1.0), (-0.5, -0.5, -0.5))
    ranges = doubt_ranges(structure_doubt, mask, grid, ct)
    first = ranges[0]
    assert first["where"] == "posterior base" and first["share"] > 0.5
    assert 20 <= first["slices"][0] <= first["slices"][1] <= 28  # model slices 10-13 = 20-26 mm = CT slices 20-27
    assert 56 <= first["centre_lps_mm"][1] <= 66  # mm, in the blurred band at the back
    assert summary_lines({"Lung_R": ranges})[0].startswith(f"Lung_R: slices {first['slices'][0]}-")


def test_a_structure_without_doubt_or_voxels_has_no_ranges():
    grid, mask, structure_doubt = _cube_with_a_blurred_corner()
    assert doubt_ranges(np.zeros_like(structure_doubt), mask, grid, grid) == []
    assert doubt_ranges(structure_doubt, np.zeros_like(mask), grid, grid) == []


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    output = tmp_path_factory.mktemp("review")
    assert engine(["segment", "--example", "-o", str(output), "--review", "--progress", "none"]) == 0
    return output


def test_review_writes_the_map_on_the_cts_grid_and_lists_the_ranges(reviewed):
    report = json.loads((reviewed / "lung2_example_report.json").read_text())
    review_map = read_volume(report["outputs"]["review"])
    labels = read_volume(report["outputs"]["labels"])
    ct = read_volume(example_ct())
    assert review_map.array.shape == ct.array.shape and np.allclose(review_map.ijk_to_lps, ct.ijk_to_lps)
    assert review_map.array.dtype == np.uint8 and 50 <= review_map.array.max() <= 100
    inside = labels.array == 1
    deep = inside & np.roll(inside, 8, 1) & np.roll(inside, -8, 1) & np.roll(inside, 8, 2) & np.roll(inside, -8, 2)
    assert np.median(review_map.array[deep]) <= 5  # percent: sure inside the lung
    assert review_map.array[0, 0, 0] <= 5 and review_map.array[-1, -1, -1] <= 5  # sure in the air outside
    edge = inside & ~deep & ~(inside & np.roll(inside, 2, 2) & np.roll(inside, -2, 2))
    assert review_map.array[edge].mean() > 10 * max(review_map.array[deep].mean(), 0.1)
    for name in ("Lung_R", "Lung_L"):
        ranges = report["review"]["ranges"][name]
        assert 1 <= len(ranges) <= 3
        for found in ranges:  # doubt may lie beyond the drawn lung: a base the model was unsure of
            first, last = found["slices"]
            assert 0 <= first <= last < ct.array.shape[0] and 0 < found["share"] <= 1
            assert found["where"].split()[-1] in ("apex", "middle", "base")
    assert report["review"]["summary"][0].startswith("Lung_R: slices ")


def test_without_review_there_is_no_map(tmp_path):
    assert engine(["segment", "--example", "-o", str(tmp_path / "out"), "--progress", "none"]) == 0
    report = json.loads((tmp_path / "out" / "lung2_example_report.json").read_text())
    assert "review" not in report and "review" not in report["outputs"]
    assert not (tmp_path / "out" / "lung2_example_review.nrrd").exists()
