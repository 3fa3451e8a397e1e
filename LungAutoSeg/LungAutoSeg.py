"""LungAutoSeg: "Segment right lung" in 3D Slicer (thin; the work is in LungAutoSegLib).

The Logic writes the CT to a temporary NRRD, runs the engine (`lungautoseg segment --review`)
with Slicer's own Python in a child process, follows its JSON-lines progress from a reader
thread (the UI never freezes; Cancel kills the process tree), and loads the engine's own
.seg.nrrd (names, colours, SNOMED terminology as the engine wrote them) into a segmentation
node on the CT's grid, and its review map (where the model is unsure) as a volume.
"""
import importlib.util
import os
import queue
import shutil
import threading
from pathlib import Path

import qt
import slicer
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

STRUCTURE_LABELS = {"Lung_R": "right lung", "Lung_L": "left lung", "Heart": "heart", "Esophagus": "esophagus",
                    "SpinalCord": "spinal cord"}


class LungAutoSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "LungAutoSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.contributors = ["LungAutoSeg developers"]
        self.parent.helpText = (
            "AI auto-contouring of the lungs on radiotherapy planning CT: choose a CT, click "
            "<b>Segment right lung</b>, correct the result in the Segment Editor, export RTSTRUCT. "
            "<b>Not clinically validated</b>: every contour must be reviewed. The bundled model's card "
            "(training data, leave-one-out scores) is in Resources/Models/*/MODEL_CARD.md."
        )
        self.parent.acknowledgementText = "Builds on 3D Slicer, SlicerRT, MONAI, PyTorch and pydicom."


class LungAutoSegWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = LungAutoSegLogic()
        widget = slicer.util.loadUI(self.resourcePath("UI/LungAutoSeg.ui"))
        self.layout.addWidget(widget)
        self.ui = slicer.util.childWidgetVariables(widget)
        widget.setMRMLScene(slicer.mrmlScene)
        self.structureBoxes = {}
        self.job = None
        self.restoring = True  # until the saved parameters are restored, nothing may overwrite them
        self.reviewNode, self.reviewCentres = None, []  # the last run's review map and its ranges (RAS)
        self.ui.deviceSelector.addItems(["Auto", "CPU", "GPU"])
        self.ui.deviceLabel.text = f"Device ({self.logic.detectedDevice()} detected):"
        self.refreshModels()
        self.ui.modelSelector.currentIndexChanged.connect(self.onModelChanged)
        self.ui.importModelButton.clicked.connect(self.onImportModel)
        self.ui.applyButton.clicked.connect(self.onApplyOrCancel)
        self.ui.editButton.clicked.connect(self.onEdit)
        self.ui.show3DButton.toggled.connect(self.onShow3D)
        self.ui.exportRtstructButton.clicked.connect(self.onExportRtstruct)
        self.ui.showReviewCheckBox.toggled.connect(self.onShowReview)
        self.ui.reviewList.itemClicked.connect(self.onReviewRangeClicked)
        for selector in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector):
            selector.currentNodeChanged.connect(self.saveParameters)
        self.ui.deviceSelector.currentIndexChanged.connect(self.saveParameters)
        self.restoreParameters()
        self.restoring = False
        self.saveParameters()

    # --- models and structures -----------------------------------------------------------
    def refreshModels(self):
        self.ui.modelSelector.clear()
        for folder in self.logic.installedModels():
            self.ui.modelSelector.addItem(folder.name, str(folder))
        self.ui.modelSelector.setCurrentIndex(max(0, self.ui.modelSelector.findData(str(self.logic.defaultModel()))))
        self.onModelChanged()

    def currentModel(self):
        data = self.ui.modelSelector.currentData
        return Path(data) if data else None

    def onModelChanged(self, *_):
        for box in self.structureBoxes.values():
            box.deleteLater()
        self.structureBoxes = {}
        model = self.currentModel()
        if model is None:
            return
        for structure in self.logic.modelStructures(model):
            box = qt.QCheckBox(structure["name"])
            box.checked = structure["name"] == "Lung_R"
            box.toggled.connect(self.updateButtons)
            self.ui.structuresFrame.layout().addWidget(box)
            self.structureBoxes[structure["name"]] = box
        self.saveParameters()
        self.updateButtons()

    def chosenStructures(self):
        return [name for name, box in self.structureBoxes.items() if box.checked]

    def onImportModel(self):
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Import model package", "",
                                              "Model package (*.zip)")
        if not path:
            return
        try:
            folder = self.logic.importModel(path)
        except Exception as error:
            slicer.util.errorDisplay(f"Model not imported: {error}")
            return
        self.refreshModels()
        self.ui.modelSelector.setCurrentIndex(self.ui.modelSelector.findText(folder.name))

    # --- parameter node: a saved scene restores the module's state -----------------------
    def saveParameters(self, *_):
        if self.restoring:
            return
        parameters = self.logic.getParameterNode()
        parameters.SetNodeReferenceID("InputVolume", self.ui.inputVolumeSelector.currentNodeID)
        parameters.SetNodeReferenceID("OutputSegmentation", self.ui.outputSegmentationSelector.currentNodeID)
        parameters.SetParameter("Model", self.ui.modelSelector.currentText)
        parameters.SetParameter("Device", self.ui.deviceSelector.currentText)
        parameters.SetParameter("Structures", ",".join(self.chosenStructures()))
        self.updateButtons()

    def restoreParameters(self):
        parameters = self.logic.getParameterNode()
        if parameters.GetNodeReference("InputVolume"):
            self.ui.inputVolumeSelector.setCurrentNode(parameters.GetNodeReference("InputVolume"))
        if parameters.GetNodeReference("OutputSegmentation"):
            self.ui.outputSegmentationSelector.setCurrentNode(parameters.GetNodeReference("OutputSegmentation"))
        for key, selector in (("Model", self.ui.modelSelector), ("Device", self.ui.deviceSelector)):
            index = selector.findText(parameters.GetParameter(key))
            if index >= 0:
                selector.setCurrentIndex(index)
        saved = [name for name in parameters.GetParameter("Structures").split(",") if name]
        for name, box in self.structureBoxes.items():
            box.checked = name in saved if saved else name == "Lung_R"

    # --- apply / cancel ------------------------------------------------------------------
    def applyLabel(self):
        names = self.chosenStructures()
        if len(names) == 1 and names[0] in STRUCTURE_LABELS:
            return f"Segment {STRUCTURE_LABELS[names[0]]}"
        if set(names) == {"Lung_R", "Lung_L"}:
            return "Segment both lungs"
        return f"Segment {len(names)} structures"

    def updateButtons(self, *_):
        running = self.job is not None
        self.ui.applyButton.text = "Cancel" if running else self.applyLabel()
        self.ui.applyButton.enabled = running or bool(
            self.ui.inputVolumeSelector.currentNode() and self.currentModel() and self.chosenStructures())
        result = self.ui.outputSegmentationSelector.currentNode() is not None and not running
        for button in (self.ui.editButton, self.ui.show3DButton, self.ui.exportRtstructButton):
            button.enabled = result
        self.ui.showReviewCheckBox.enabled = self.reviewNode is not None and not running

    def onApplyOrCancel(self):
        if self.job is not None:
            self.job.cancel()
            return
        ct = self.ui.inputVolumeSelector.currentNode()
        output = self.ui.outputSegmentationSelector.currentNode()
        names = self.chosenStructures()
        if output is not None and self.logic.wouldReplaceSegments(output, names):
            if not slicer.util.confirmOkCancelDisplay(
                    f"{output.GetName()} already has segments named {', '.join(names)}; they may hold your "
                    "edits. Replace them?"):
                return
        if not self.logic.ensureDependencies():
            return
        self.ui.logText.clear()
        self.ui.progressBar.value = 0
        device = {"Auto": "auto", "CPU": "cpu", "GPU": "cuda"}[self.ui.deviceSelector.currentText]
        try:
            self.job = self.logic.segment(ct, self.currentModel(), names, device, output, wait=False,
                                          onProgress=self.onProgress, onFinished=self.onFinished)
        except Exception as error:
            self.showError(str(error))
        self.updateButtons()

    def onProgress(self, event):
        if event.get("type") != "progress":
            return  # the final result or error event is onFinished's
        self.ui.progressBar.value = int(100 * event.get("fraction", 0))
        self.ui.statusLabel.text = event.get("message", "")
        self.ui.logText.appendPlainText(f"{event.get('stage')}: {event.get('message', '')}")

    def onFinished(self, outcome, segmentationNode, log):
        self.job = None
        for line in log:
            self.ui.logText.appendPlainText(line)
        if outcome["type"] == "error":
            self.showError(outcome["message"])
        else:
            self.ui.outputSegmentationSelector.setCurrentNode(segmentationNode)
            self.ui.progressBar.value = 100
            self.showReviewRanges(outcome.get("review"))
            volumes = ", ".join(f"{k} {v['volume_ml']} ml" for k, v in outcome["structures"].items())
            self.ui.statusLabel.text = f"Done in {outcome['seconds']['total']:.1f} s: {volumes}"
            warnings = outcome.get("warnings", [])
            if warnings:  # the plausibility checks: never let a doubtful result pass as a clean one
                self.ui.statusLabel.text += f". Check the result: {len(warnings)} warning(s)"
                for warning in warnings:
                    self.ui.logText.appendPlainText(f"WARNING: {warning}")
                slicer.util.warningDisplay("\n".join(warnings), windowTitle="LungAutoSeg: check this result")
        self.updateButtons()

    def showError(self, message):
        self.ui.statusLabel.text = f"Failed: {message}"
        self.ui.logText.appendPlainText(f"ERROR: {message}")
        slicer.util.errorDisplay(message, windowTitle="LungAutoSeg")

    # --- review: where the model is unsure ------------------------------------------------
    def showReviewRanges(self, review):
        from LungAutoSegLib.mrml_bridge import ras_from_lps

        if self.reviewNode is not None and self.reviewNode is not self.logic.reviewNode:
            slicer.mrmlScene.RemoveNode(self.reviewNode)  # the previous run's map
        self.reviewNode = self.logic.reviewNode
        self.ui.reviewList.clear()
        self.reviewCentres = []
        for name, ranges in ((review or {}).get("ranges") or {}).items():
            for found in ranges:
                first, last = found["slices"]
                self.ui.reviewList.addItem(f"{name}: slices {first}-{last}, {found['where']} "
                                           f"({100 * found['share']:.0f}% of its doubt)")
                self.reviewCentres.append(ras_from_lps(found["centre_lps_mm"]))
        if self.ui.showReviewCheckBox.checked:
            self.onShowReview(True)

    def onShowReview(self, show):
        """The review map over the CT in every slice view (bright: unsure), or off again."""
        ct = self.ui.inputVolumeSelector.currentNode()
        for composite in slicer.util.getNodesByClass("vtkMRMLSliceCompositeNode"):
            if show and self.reviewNode is not None:
                composite.SetBackgroundVolumeID(ct.GetID() if ct else None)
                composite.SetForegroundVolumeID(self.reviewNode.GetID())
                composite.SetForegroundOpacity(0.5)
            elif composite.GetForegroundVolumeID() == (self.reviewNode.GetID() if self.reviewNode else None):
                composite.SetForegroundVolumeID(None)

    def onReviewRangeClicked(self, item):
        row = self.ui.reviewList.row(item)
        if 0 <= row < len(self.reviewCentres):
            r, a, s = self.reviewCentres[row]
            slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)

    # --- after segmentation --------------------------------------------------------------
    def onEdit(self):
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(self.ui.outputSegmentationSelector.currentNode())
        editor.setSourceVolumeNode(self.ui.inputVolumeSelector.currentNode())

    def onShow3D(self, show):
        node = self.ui.outputSegmentationSelector.currentNode()
        if show:
            node.CreateClosedSurfaceRepresentation()
        else:
            node.RemoveClosedSurfaceRepresentation()

    def onExportRtstruct(self):
        """SlicerRT's exporter takes the CT's study with the segmentation: open the export dialog on it."""
        from DICOMLib import DICOMExportDialog

        hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
        study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(self.ui.inputVolumeSelector.currentNode()))
        self.exportDialog = DICOMExportDialog(study)
        self.exportDialog.open()


class LungAutoSegLogic(ScriptedLoadableModuleLogic):
    """Runs the engine; ``segment(..., wait=True)`` is the synchronous path for scripts and the self-test."""

    engine, engineModel = None, None  # one warm engine per Slicer, whichever logic asks (see warmEngine)

    def __init__(self, parent=None):
        ScriptedLoadableModuleLogic.__init__(self, parent)
        self.reviewNode = None  # the last run's review map

    def modelFolders(self):
        bundled = Path(__file__).resolve().parent / "Resources" / "Models"
        user = Path(slicer.app.slicerUserSettingsFilePath).parent / "LungAutoSeg" / "models"  # survives upgrades
        return bundled, user

    def defaultModel(self):
        """The engine's own default: the bundled package with the most structures, then the newest."""
        from LungAutoSegLib.model_package import bundled_package

        return bundled_package()

    def installedModels(self):
        return [p for folder in self.modelFolders() if folder.is_dir()
                for p in sorted(folder.iterdir()) if (p / "manifest.json").is_file()]

    def modelStructures(self, model):
        from LungAutoSegLib.model_package import load_package

        return load_package(model).structures

    def importModel(self, zipPath):
        """Verify a package zip (schema, checksum, safe paths) and install it into the user folder."""
        from LungAutoSegLib.model_package import load_package

        package = load_package(zipPath)
        target = self.modelFolders()[1] / package.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(package.root, target)
        return load_package(target).root

    def detectedDevice(self):
        try:
            import torch
        except ImportError:
            return "PyTorch not installed"
        return f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "CPU only"

    def ensureDependencies(self):
        """torch through the PyTorch extension, MONAI and the rest with pip (the engine's own
        pins, LungAutoSegLib/requirements.py), after asking."""
        from LungAutoSegLib.requirements import IN_SLICER

        if importlib.util.find_spec("torch") is None:
            import PyTorchUtils

            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True) is None:
                return False
        missing = [requirement for module, requirement in IN_SLICER if importlib.util.find_spec(module) is None]
        if missing:
            if not slicer.util.confirmOkCancelDisplay(f"LungAutoSeg needs {', '.join(missing)}. Install now?"):
                return False
            for requirement in missing:
                slicer.util.pip_install(requirement)
        return True

    def wouldReplaceSegments(self, segmentationNode, names):
        segmentation = segmentationNode.GetSegmentation()
        return any(segmentation.GetSegmentIdBySegmentName(name) for name in names)

    def pythonSlicer(self):
        """Slicer's own Python: on PATH inside Slicer, else bin/PythonSlicer(.exe) under its home."""
        name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
        return shutil.which("PythonSlicer") or str(Path(slicer.app.slicerHome) / "bin" / name)

    def segment(self, ctNode, model, structures, device="auto", outputSegmentationNode=None, wait=False,
                onProgress=None, onFinished=None):
        from LungAutoSegLib.engine_process import EngineJob

        job = EngineJob(python=self.pythonSlicer())
        slicer.util.exportNode(ctNode, str(job.input), {"useCompression": 0})
        engine = self.warmEngine(model)
        # what _load reads: no NIfTI labels or preview, written into the job's folder and deleted
        request = job.request(model=model, structures=structures, device=device, review=True,
                              files=["segmentation", "review"])
        engine.submit(job, request)  # here, not in the thread: Cancel can kill it from now on
        follow = lambda onEvent: engine.answer(job, request, onEvent)  # noqa: E731
        if wait:
            outcome = follow(onProgress)
            node = self._load(outcome, ctNode, outputSegmentationNode, model)
            job.cleanup()
            if outcome["type"] == "error":
                raise RuntimeError(outcome["message"])
            return node
        events = queue.Queue()
        threading.Thread(target=lambda: events.put(("done", follow(lambda e: events.put(("event", e))))),
                         daemon=True).start()
        timer = qt.QTimer()
        timer.setInterval(100)

        def poll():
            while not events.empty():
                kind, payload = events.get()
                if kind == "event" and onProgress:
                    onProgress(payload)
                elif kind == "done":
                    timer.stop()
                    node = None
                    try:
                        node = self._load(payload, ctNode, outputSegmentationNode, model)
                    except Exception as error:
                        payload = {"type": "error", "message": str(error)}
                    job.cleanup()
                    if onFinished:
                        onFinished(payload, node, job.log)

        timer.timeout.connect(poll)
        timer.start()
        job.timer = timer  # kept alive with the job
        return job

    def warmEngine(self, model):
        """The engine process kept between runs (LungAutoSegLib.engine_process.WarmEngine): one
        per model choice; a new choice ends the old one. It exits by itself after the idle time
        (settings key LungAutoSeg/engineIdleSeconds, default 600) and with Slicer."""
        cls = LungAutoSegLogic
        if cls.engine is not None and cls.engineModel != model:
            cls.engine.close()
            cls.engine = None
        if cls.engine is None:
            from LungAutoSegLib.engine_process import WarmEngine

            moduleFolder = str(Path(__file__).resolve().parent)  # PythonSlicer does not see module paths
            environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [moduleFolder,
                                                                                os.environ.get("PYTHONPATH")])))
            idle = float(qt.QSettings().value("LungAutoSeg/engineIdleSeconds", 600))
            cls.engine, cls.engineModel = WarmEngine(self.pythonSlicer(), environment, idle), model
            slicer.app.aboutToQuit.connect(cls.engine.close)
        return cls.engine

    def _load(self, outcome, ctNode, segmentationNode, model):
        """The engine's .seg.nrrd into a segmentation node on the CT's grid, under the CT's study
        (segments of the same name replaced, others kept); its review map as a volume."""
        self.reviewNode = None
        if outcome["type"] != "result":
            return None
        from LungAutoSegLib.mrml_bridge import load_segments

        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                  f"{ctNode.GetName()} LungAutoSeg")
            segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(ctNode)
        load_segments(outcome["outputs"]["segmentation"], segmentationNode)
        hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
        study = hierarchy.GetItemParent(hierarchy.GetItemByDataNode(ctNode))
        hierarchy.SetItemParent(hierarchy.GetItemByDataNode(segmentationNode), study)
        if "review" in outcome["outputs"]:
            self.reviewNode = self._loadReviewMap(outcome["outputs"]["review"], f"{ctNode.GetName()} LungAutoSeg review")
            hierarchy.SetItemParent(hierarchy.GetItemByDataNode(self.reviewNode), study)
        return segmentationNode

    def _loadReviewMap(self, path, name):
        node = slicer.util.loadVolume(path, {"name": name, "show": False})
        node.SetAndObserveStorageNodeID(None)  # its file is temporary: saving the scene writes it anew
        display = node.GetDisplayNode()
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0, 100)  # percent doubt
        display.SetApplyThreshold(True)
        display.SetLowerThreshold(10)  # no doubt: see-through
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeRainbow")
        return node


class LungAutoSegTest(ScriptedLoadableModuleTest):
    """Inside Slicer: the embedded example CT, the bundled model, Lung_R on the patient's right."""

    def runTest(self):
        slicer.mrmlScene.Clear()
        self.test_right_lung_lies_on_the_right()

    def test_right_lung_lies_on_the_right(self):
        import numpy as np

        example = Path(__file__).resolve().parent / "Resources" / "Example" / "lung2_example.nrrd"
        ct = slicer.util.loadVolume(str(example))
        logic = LungAutoSegLogic()
        node = logic.segment(ct, logic.defaultModel(), ["Lung_R"], "cpu", wait=True)
        segmentation = node.GetSegmentation()
        self.assertEqual(segmentation.GetNthSegment(0).GetName(), "Lung_R")
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(node, segmentation.GetSegmentIdBySegmentName("Lung_R"), ct)
        ijk = np.argwhere(mask).mean(axis=0)[::-1]
        matrix = slicer.util.arrayFromVTKMatrix(_ijkToRas(ct))
        centre_ras = matrix[:3, :3] @ ijk + matrix[:3, 3]
        self.assertGreater(centre_ras[0], 40)  # RAS: the patient's right is +x
        self.assertGreater(mask.sum() * np.prod(ct.GetSpacing()) / 1000, 1000)  # ml: a whole lung


def _ijkToRas(volumeNode):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return matrix
