"""Model packages and DICOM headers are untrusted: property-based fuzzing (hypothesis) shows that
only the project's own clear error, InputError, ever escapes, and that a package's weights
cannot run code."""
import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid

import thorax_phantom as tp
from LungAutoSegLib.dicom_io import read_dicom_ct
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.inference import predict
from LungAutoSegLib.model_package import load_package, sha256_of, write_package
from LungAutoSegLib.networks import build_network
from LungAutoSegLib.volume import Volume

TINY = {"class": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 1, "norm": "batch"}
MANIFEST = {"name": "tiny", "version": "0.0.1", "description": "fuzz",
            "structures": [{"name": "Lung_R", "label": 1, "colour": [80, 160, 220]}],
            "network": TINY, "preprocessing": {"spacing": [8.0, 8.0, 8.0]},
            "inference": {"patch_size": [16, 16, 16], "window": [32, 32, 32]}}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8)
MANIFEST_FIELDS = [("name",), ("version",), ("schema_version",), ("structures",), ("structures", 0, "label"),
                   ("structures", 0, "name"), ("structures", 0, "colour"), ("network",), ("network", "class"),
                   ("network", "channels"), ("network", "strides"), ("network", "num_res_units"),
                   ("network", "norm"), ("network", "dropout"), ("preprocessing",), ("preprocessing", "spacing"),
                   ("preprocessing", "hu_window"), ("inference",), ("inference", "patch_size"),
                   ("inference", "window"), ("inference", "overlap"), ("inference", "padding"),
                   ("inference", "blend"), ("inference", "postprocessing"), ("weights",), ("weights", "file")]


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return write_package(tmp_path_factory.mktemp("models"), MANIFEST, build_network(TINY, 2).state_dict())


@pytest.fixture(scope="module")
def tiny_ct() -> Volume:
    return tp.render(tp.make_anatomy(0), tp.make_grid((40, 36, 10), (9.0, 9.0, 12.0))).ct


def _set(document, path, value):
    for key in path[:-1]:
        document = document[key]
    document[path[-1]] = value


@FUZZ
@given(field=st.sampled_from(MANIFEST_FIELDS), value=json_values)
def test_a_fuzzed_manifest_loads_and_runs_or_is_refused_with_input_error(tiny_package, tiny_ct, tmp_path, field,
                                                                         value):
    folder = tmp_path / f"case-{abs(hash((field, repr(value))))}"
    shutil.copytree(tiny_package, folder)
    manifest = copy.deepcopy(json.loads((folder / "manifest.json").read_text()))
    _set(manifest, field, value)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    try:
        package = load_package(folder)
        predict(tiny_ct, package, device="cpu")  # whatever was accepted must run
    except InputError as error:
        assert str(error)
    finally:
        shutil.rmtree(folder)


def test_weights_that_are_a_pickle_never_run(tiny_package, tmp_path):
    """A package whose weights file is a torch pickle with a payload, its checksum correct."""
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    folder = tmp_path / "evil-1.0.0"
    shutil.copytree(tiny_package, folder)
    torch.save({"model.0.conv.unit0.conv.weight": Payload()}, folder / "model.safetensors")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["weights"]["sha256"] = sha256_of(folder / "model.safetensors")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InputError, match="weights do not fit"):
        load_package(folder).load_network("cpu")
    assert not (tmp_path / "pwned").exists()


@pytest.fixture(scope="module")
def tiny_series(tmp_path_factory) -> Path:
    phantom = tp.render(tp.make_anatomy(0), tp.make_grid((16, 12, 4), (20.0, 22.0, 25.0)))
    folder = tmp_path_factory.mktemp("series")
    tp.write_ct_series(phantom.ct, folder, "FUZZ", generate_uid())
    return folder


HEADER_FIELDS = ["PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "Rows", "Columns",
                 "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
                 "RescaleSlope", "RescaleIntercept", "Modality", "SeriesInstanceUID", "SliceThickness",
                 "PhotometricInterpretation", "NumberOfFrames", "PixelData", "SOPInstanceUID"]
header_values = (st.none() | st.integers(-70000, 70000) | st.floats(allow_nan=True, allow_infinity=True)
                 | st.text(max_size=20) | st.binary(max_size=64)
                 | st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=7))


@FUZZ
@given(field=st.sampled_from(HEADER_FIELDS), value=header_values, every_slice=st.booleans())
def test_a_fuzzed_dicom_header_reads_or_is_refused_with_input_error(tiny_series, tmp_path, field, value,
                                                                    every_slice):
    folder = tmp_path / f"case-{abs(hash((field, repr(value), every_slice)))}"
    shutil.copytree(tiny_series, folder)
    try:
        with _ignore_validation():
            for path in sorted(folder.iterdir())[: None if every_slice else 1]:
                ds = pydicom.dcmread(path)
                try:
                    if value is None:
                        if field in ds:
                            delattr(ds, field)
                    else:
                        setattr(ds, field, value)
                    ds.save_as(path)
                except Exception:  # a value pydicom cannot even encode is no input anyone can send
                    assume(False)
        try:
            ct = read_dicom_ct(folder)
            assert ct.volume.array.ndim == 3 and np.isfinite(ct.volume.ijk_to_lps).all()
        except InputError as error:
            assert str(folder) in str(error)  # names the folder or one of its files
    finally:
        shutil.rmtree(folder)


class _ignore_validation:
    """pydicom 3: write invalid values as asked (what a broken scanner or converter does)."""

    def __enter__(self):
        self.before = pydicom.config.settings.writing_validation_mode
        pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE

    def __exit__(self, *exc):
        pydicom.config.settings.writing_validation_mode = self.before
