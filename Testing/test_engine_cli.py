"""``lungautoseg inspect`` and how the engine is installed."""
import json
import subprocess
import sys
from importlib import metadata

import pytest
from pydicom.uid import generate_uid

import thorax_phantom as tp
from conftest import make_phantom


def run(*args):
    return subprocess.run([sys.executable, "-m", "LungAutoSegLib.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_inspect_prints_geometry_in_lps(tmp_path):
    phantom = make_phantom(1, "x_flipped")
    tp.write_ct_series(phantom.ct, tmp_path, "P", generate_uid())
    done = run("inspect", tmp_path)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["size_ijk"] == [96, 96, 20]
    assert info["spacing_mm"] == [3.6, 3.6, 10.0]
    assert info["direction"][0][0] == -1.0  # rows run towards the patient's right
    low, high = info["lps_bounds_mm"]
    assert low[0] == pytest.approx(-171, abs=0.1) and high[0] == pytest.approx(171, abs=0.1)


def test_inspect_error_names_the_file_and_exits_non_zero(tmp_path):
    broken = tmp_path / "ct.nrrd"
    broken.write_text("garbage")
    done = run("inspect", broken)
    assert done.returncode == 2
    assert done.stderr.startswith("lungautoseg: error: ") and str(broken) in done.stderr
    assert "Traceback" not in done.stderr


def test_opencv_is_installed_once():
    # rt-utils (a test-only reader) asks for opencv-python; both wheels would write the same cv2/ folder
    assert metadata.distribution("opencv-python-headless")
    with pytest.raises(metadata.PackageNotFoundError):
        metadata.distribution("opencv-python")
