"""The Slicer module itself, unchanged, driven through its real widget in the Slicer stand-in
(``slicer_standin``: real Qt from PyQt5 offscreen and real MRML from slicer-core; stand-ins only
for Slicer's C++ application parts). Each test fails when the module breaks the way it would
break in Slicer (``test_the_tests_catch_what_slicer_would_catch`` shows it on broken copies)."""
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, make_phantom

EXAMPLE = REPO / "LungAutoSeg" / "Resources" / "Example" / "lung2_example.nrrd"

ENGINE_SECONDS = 180  # an engine run here takes about 6 s; the margin is for a loaded CI machine



@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    import slicer_standin

    installed = slicer_standin.install(tmp_path_factory.mktemp("slicer-home"))
    yield installed
    engine = installed.module.LungAutoSegLogic.engine
    if engine is not None:  # as when Slicer quits
        engine.close()



@pytest.fixture
def scene(standin):
    """A fresh scene (the slice views' singleton nodes stay, as after File > Close Scene)."""
    import slicer

    slicer.mrmlScene.Clear(0)
    standin.exports.clear()
    standin.selected_modules.clear()
    return slicer.mrmlScene



def make_widget(standin):
    from slicer_standin.scripted_module import module_parent

    standin.module.LungAutoSeg(module_parent())
    widget = standin.module.LungAutoSegWidget()
    widget.setup()
    return widget



def wait(standin, done, seconds=ENGINE_SECONDS):
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "the module did not finish in time"
        standin.qt_app.processEvents()
        time.sleep(0.02)



def load_ct_in_a_study(path=EXAMPLE):
    """The CT as DICOM import leaves it: under a patient and a study in the subject hierarchy."""
    import slicer

    ct = slicer.util.loadVolume(str(path))
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient"), "Study")
    hierarchy.SetItemParent(hierarchy.GetItemByDataNode(ct), study)
    return ct, study



def run_apply(standin, widget):
    """Click Apply, record the progress bar as the run goes, wait for the end."""
    values = []
    widget.ui.progressBar.valueChanged.connect(values.append)
    widget.ui.applyButton.click()
    assert widget.job is not None and widget.ui.applyButton.text == "Cancel"
    wait(standin, lambda: widget.job is None)
    return values



@pytest.fixture(scope="module")
def segmented(standin):
    """One run on the example CT (module-wide: each run costs an engine process)."""
    import slicer

    slicer.mrmlScene.Clear(0)
    widget = make_widget(standin)
    ct, study = load_ct_in_a_study()
    values = run_apply(standin, widget)
    return widget, ct, study, values



def test_the_panel_starts_ready_for_the_right_lung(standin, scene):
    widget = make_widget(standin)
    assert widget.ui.applyButton.text == "Segment right lung"
    assert not widget.ui.applyButton.enabled  # no CT yet
    assert list(widget.structureBoxes) == ["Lung_R", "Lung_L"]
    assert [name for name, box in widget.structureBoxes.items() if box.checked] == ["Lung_R"]
    assert widget.ui.deviceLabel.text == "Device (CPU only detected):"
    assert widget.ui.modelSelector.currentText == "lungs-2.1.0"  # the engine's default
    assert not widget.ui.editButton.enabled and not widget.ui.showReviewCheckBox.enabled
    load_ct_in_a_study()
    assert widget.ui.inputVolumeSelector.currentNode().GetName() == "lung2_example"
    assert widget.ui.applyButton.enabled
    widget.structureBoxes["Lung_L"].checked = True
    assert widget.ui.applyButton.text == "Segment both lungs"
    widget.structureBoxes["Lung_R"].checked = False
    assert widget.ui.applyButton.text == "Segment left lung"



def test_the_parameter_node_survives_a_saved_and_reloaded_scene(standin, scene, tmp_path):
    widget = make_widget(standin)
    ct, _ = load_ct_in_a_study()
    widget.structureBoxes["Lung_L"].checked = True
    widget.saveParameters()
    widget.ui.deviceSelector.setCurrentIndex(widget.ui.deviceSelector.findText("CPU"))
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    ct_id = ct.GetID()
    scene.Clear(0)
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Import()
    restored = make_widget(standin)
    assert restored.ui.inputVolumeSelector.currentNodeID == ct_id
    assert restored.ui.deviceSelector.currentText == "CPU"
    assert restored.structureBoxes["Lung_R"].checked and restored.structureBoxes["Lung_L"].checked



def test_apply_gives_lung_r_on_the_cts_grid_under_its_study(standin, segmented):
    import slicer

    from LungAutoSegLib.ct_reader import read_ct
    from LungAutoSegLib.inference import predict
    from LungAutoSegLib.model_package import load_package

    widget, ct, study, values = segmented
    node = widget.ui.outputSegmentationSelector.currentNode()
    segmentation = node.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == ["Lung_R"]
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(node, segmentation.GetSegmentIdBySegmentName("Lung_R"), ct)
    expected = predict(read_ct(EXAMPLE).volume, load_package(None), device="cpu", structures=["Lung_R"]).labels.array == 1
    assert mask.shape == expected.shape and np.count_nonzero(mask.astype(bool) != expected) <= 20
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(_ijk_to_ras(ct))
    centre = ijk_to_ras[:3, :3] @ np.argwhere(mask).mean(axis=0)[::-1] + ijk_to_ras[:3, 3]
    assert centre[0] > 40  # RAS: the patient's right is +x, millimetres from the midline
    volume_ml = mask.sum() * np.prod(ct.GetSpacing()) / 1000
    assert f"Lung_R {volume_ml:.1f} ml" in widget.ui.statusLabel.text



def test_progress_ends_at_100_percent_and_the_log_holds_only_stages(segmented):
    widget, _, _, values = segmented
    assert values[0] < 50 and values[-1] == 100 and values == sorted(values) and len(values) >= 4
    assert widget.ui.progressBar.value == 100 and widget.ui.applyButton.text == "Segment right lung"
    log = widget.ui.logText.toPlainText().splitlines()
    assert log[0].startswith("read:") and "inference: inference done" in log
    assert not any(line.startswith("None") for line in log)



def test_edit_hands_the_segmentation_and_the_ct_to_the_segment_editor(standin, segmented):
    widget, ct, _, _ = segmented
    widget.ui.editButton.click()
    assert standin.selected_modules[-1] == "SegmentEditor"
    assert standin.editor.segmentationNode is widget.ui.outputSegmentationSelector.currentNode()
    assert standin.editor.sourceVolumeNode is ct



def test_show_3d_makes_a_closed_surface_and_hides_it_again(segmented):
    widget = segmented[0]
    node = widget.ui.outputSegmentationSelector.currentNode()
    widget.ui.show3DButton.click()  # checkable: toggled on
    segmentation = node.GetSegmentation()
    assert segmentation.ContainsRepresentation("Closed surface")
    surface = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Lung_R")).GetRepresentation(
        "Closed surface")
    bounds = surface.GetBounds()
    # RAS: on the patient's right; only the azygo-oesophageal recess, in front of the spine,
    # reaches past the scanner's midline (by about 1 mm on this CT)
    assert surface.GetNumberOfPoints() > 1000 and bounds[0] > -5 and (bounds[0] + bounds[1]) / 2 > 50
    widget.ui.show3DButton.click()
    assert not segmentation.ContainsRepresentation("Closed surface")



def test_export_rtstruct_opens_the_export_dialog_on_the_cts_study(standin, segmented):
    widget, _, study, _ = segmented
    widget.ui.exportRtstructButton.click()
    assert standin.exports[-1] == study



def test_the_review_map_overlays_the_ct_and_its_ranges_move_the_slice_views(standin, segmented):
    import slicer

    widget, ct, _, _ = segmented
    assert widget.ui.showReviewCheckBox.enabled and widget.ui.reviewList.count >= 1
    first = widget.ui.reviewList.item(0).text()
    assert first.startswith("Lung_R: slices ") and "% of its doubt" in first
    review = widget.reviewNode
    assert review.GetImageData().GetDimensions() == ct.GetImageData().GetDimensions()
    widget.ui.showReviewCheckBox.checked = True
    red = slicer.mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceCompositeNode")
    assert red.GetForegroundVolumeID() == review.GetID() and red.GetBackgroundVolumeID() == ct.GetID()
    widget.ui.reviewList.itemClicked.emit(widget.ui.reviewList.item(0))
    axial = slicer.mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceNode")
    assert axial.GetSliceOffset() == pytest.approx(widget.reviewCentres[0][2], abs=0.01)  # S in mm
    widget.ui.showReviewCheckBox.checked = False
    assert red.GetForegroundVolumeID() is None



def test_a_second_run_asks_before_replacing_and_keeps_the_users_own_segments(standin, segmented, caplog,
                                                                             monkeypatch):
    import slicer

    widget = segmented[0]
    node = widget.ui.outputSegmentationSelector.currentNode()
    node.GetSegmentation().AddEmptySegment("my_ptv", "my_ptv")
    first_review = widget.reviewNode
    with caplog.at_level(logging.INFO):
        widget.ui.applyButton.click()  # Slicer's testing mode answers the prompt as Cancel
    assert any("already has segments named Lung_R" in r.getMessage() for r in caplog.records)
    assert widget.job is None and slicer.mrmlScene.IsNodePresent(first_review)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *args, **kwargs: True)  # the user says OK
    engine = standin.module.LungAutoSegLogic.engine
    warm_pid = engine.process.pid
    run_apply(standin, widget)
    assert engine.process.pid == warm_pid and engine.alive  # the warm engine answered, no new process
    assert widget.logic.warmEngine(widget.currentModel()) is engine
    segmentation = node.GetSegmentation()
    names = sorted(segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments()))
    assert names == ["Lung_R", "my_ptv"] and widget.ui.outputSegmentationSelector.currentNode() is node
    assert not slicer.mrmlScene.IsNodePresent(first_review)  # one review map: the latest
    assert slicer.mrmlScene.IsNodePresent(widget.reviewNode)


def test_warnings_reach_the_status_and_the_log(standin, scene, tmp_path, caplog):
    """A CT of water with air inserts is not a chest: the run succeeds and says so."""
    import slicer

    from LungAutoSegLib.image_io import write_volume
    from non_chest_phantoms import water_phantom

    write_volume(water_phantom(), tmp_path / "water.nrrd")
    widget = make_widget(standin)
    load_ct_in_a_study(tmp_path / "water.nrrd")
    with caplog.at_level(logging.WARNING):
        run_apply(standin, widget)
    assert "Check the result:" in widget.ui.statusLabel.text
    assert "WARNING:" in widget.ui.logText.toPlainText()
    assert any("not" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1



def test_cancel_stops_the_engine_and_leaves_no_files(standin, scene):
    import slicer

    widget = make_widget(standin)
    load_ct_in_a_study()
    widget.ui.applyButton.click()
    job = widget.job
    widget.ui.applyButton.click()  # the button reads Cancel now
    wait(standin, lambda: widget.job is None)
    assert job.process.poll() is not None and not job.work.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(job.process.pid, 0)  # the warm engine and all it started are gone
    assert not standin.module.LungAutoSegLogic.engine.alive  # the next run starts a fresh one
    assert widget.ui.statusLabel.text == "Failed: cancelled by the user"
    assert slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert widget.ui.applyButton.text == "Segment right lung" and widget.ui.applyButton.enabled



def test_a_refused_input_shows_the_engines_reason(standin, scene, tmp_path, caplog):
    from LungAutoSegLib.image_io import write_volume
    from LungAutoSegLib.volume import Volume

    ct = make_phantom(3, "square_axial").ct
    write_volume(Volume(ct.array[:3].copy(), ct.ijk_to_lps), tmp_path / "slab.nrrd")
    widget = make_widget(standin)
    load_ct_in_a_study(tmp_path / "slab.nrrd")
    with caplog.at_level(logging.ERROR):
        run_apply(standin, widget)
    message = "the CT has 3 slice(s): contouring needs a 3D CT of at least 5 slices"
    assert any(message in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)  # the message box
    assert message in widget.ui.statusLabel.text and "ERROR: " in widget.ui.logText.toPlainText()
    assert widget.ui.progressBar.value < 100



def _package_zip(tmp_path, spoil=None) -> Path:
    from LungAutoSegLib.model_package import BUNDLED_MODELS

    folder = tmp_path / "lungs-9.9.9"
    shutil.copytree(BUNDLED_MODELS / "lungs-2.1.0", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "version": "9.9.9"}))
    if spoil:
        spoil(folder)
    return Path(shutil.make_archive(str(folder), "zip", root_dir=tmp_path, base_dir=folder.name))



def _zip_slip(tmp_path) -> Path:
    import zipfile

    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("../../escaped.txt", "x")
    return archive



@pytest.mark.parametrize("kind, message", [
    ("good", None), ("bad checksum", "weights checksum mismatch"), ("zip slip", "outside the package")])
def test_import_model_installs_a_good_package_and_refuses_a_bad_one(standin, scene, tmp_path, monkeypatch, caplog,
                                                                     kind, message):
    import qt

    if kind == "good":
        archive = _package_zip(tmp_path)
    elif kind == "bad checksum":
        archive = _package_zip(tmp_path, lambda f: (f / "model.safetensors").write_bytes(b"\0" * 64))
    else:
        (tmp_path / "deep" / "er").mkdir(parents=True)
        archive = _zip_slip(tmp_path / "deep" / "er")
    monkeypatch.setattr(qt.QFileDialog, "getOpenFileName", staticmethod(lambda *a: str(archive)))
    user_models = standin.module.LungAutoSegLogic().modelFolders()[1]
    shutil.rmtree(user_models / "lungs-9.9.9", ignore_errors=True)  # from an earlier case
    widget = make_widget(standin)
    with caplog.at_level(logging.ERROR):
        widget.ui.importModelButton.click()
    if message is None:
        assert (user_models / "lungs-9.9.9" / "manifest.json").is_file()
        assert widget.ui.modelSelector.currentText == "lungs-9.9.9"
    else:
        assert any(message in r.getMessage() for r in caplog.records)
        assert not (user_models / "lungs-9.9.9").exists() and not (tmp_path / "deep" / "escaped.txt").exists()
        assert widget.ui.modelSelector.findText("lungs-9.9.9") == -1



def test_missing_packages_are_installed_with_the_engines_pins_after_asking(standin, monkeypatch):
    import importlib.util

    import slicer
    from LungAutoSegLib.requirements import IN_SLICER

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name in ("monai", "cv2")
                        else found(name, *args))
    installed = []
    monkeypatch.setattr(slicer.util, "pip_install", installed.append)
    logic = standin.module.LungAutoSegLogic()
    assert not logic.ensureDependencies() and installed == []  # testing mode answers the prompt as Cancel
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda *args, **kwargs: True)
    assert logic.ensureDependencies()
    assert installed == [dict(IN_SLICER)["monai"], dict(IN_SLICER)["cv2"]]
    assert installed[0] == "monai>=1.5,<1.7"


def test_the_modules_own_self_test_passes(standin, scene):
    standin.module.LungAutoSegTest().runTest()



def _ijk_to_ras(node):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrix



BREAKAGES = {  # how a module change breaks in Slicer: (file, old text, new text, Slicer's error)
    "a PyQt-style text() call": ("LungAutoSeg.py", 'SetParameter("Model", self.ui.modelSelector.currentText)',
                                 'SetParameter("Model", self.ui.modelSelector.currentText())',
                                 "TypeError: 'str' object is not callable"),
    "a wrong signal": ("LungAutoSeg.py", "self.ui.applyButton.clicked.connect", "self.ui.applyButton.triggered.connect",
                       "has no attribute 'triggered'"),
    "a renamed widget": ("Resources/UI/LungAutoSeg.ui", 'name="applyButton"', 'name="segmentButton"',
                         "has no attribute 'applyButton'"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_the_tests_catch_what_slicer_would_catch(breakage, tmp_path):
    """A broken copy of the module fails the panel test with Slicer's error (in a fresh process:
    one stand-in per process)."""
    source = REPO / "LungAutoSeg"
    copy = tmp_path / "LungAutoSeg"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("Models", "__pycache__"))
    (copy / "Resources" / "Models").symlink_to(source / "Resources" / "Models")
    name, old, new, error = BREAKAGES[breakage]
    text = (copy / name).read_text()
    assert old in text
    (copy / name).write_text(text.replace(old, new))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k",
                          "panel_starts_ready", __file__], capture_output=True, text=True, cwd=REPO / "Testing",
                         env={**os.environ, "LUNGAUTOSEG_MODULE_FOLDER": str(copy)}, timeout=600)
    assert run.returncode == 1 and "1 failed" in run.stdout and error in run.stdout, run.stdout[-2000:]
