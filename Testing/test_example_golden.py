"""The README's main command gives the labels it gave when they were recorded (lungs 2.1.0 with
its CT-grid edge; the plan refactor of issue 14 moved no voxel of 2.0.0's): a refactor must
not move a voxel."""
from pathlib import Path

import numpy as np

from LungAutoSegLib.cli import example_ct
from LungAutoSegLib.image_io import read_volume
from LungAutoSegLib.segment_command import run_segment

GOLDEN = Path(__file__).with_name("golden") / "lung2_example_labels.nii.gz"
# Identical on the machine that recorded them. Another CPU's vector units may round a float
# differently, which can flip a voxel whose interpolated mask lies within 1e-6 of 0.5: a
# handful is allowed, a real change moves thousands.
FLOAT_ROUNDING_VOXELS = 20


def test_segment_example_gives_the_recorded_labels(tmp_path):
    report = run_segment(example_ct(), tmp_path / "out")
    labels, golden = read_volume(report["outputs"]["labels"]), read_volume(GOLDEN)
    assert np.allclose(labels.ijk_to_lps, golden.ijk_to_lps)
    assert np.count_nonzero(labels.array != golden.array) <= FLOAT_ROUNDING_VOXELS
    assert sorted(np.unique(golden.array)) == [0, 1, 2]
