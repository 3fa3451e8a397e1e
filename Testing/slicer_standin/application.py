"""Stand-ins for what Slicer's C++ application gives a scripted module: ``slicer.app`` (settings
folder, testing mode, the IO manager), the main window's module selector, ``slicer.modules``
with the Segment Editor, the slice views' MRML nodes, and DICOMLib's export dialog. Each
records what the module asked of it; the data underneath (volumes, segmentations, slice
nodes, subject hierarchy) is real MRML from slicer-core."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import slicer
import vtk
from PyQt5 import QtWidgets

SLICE_VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}


class IOManager:
    """``slicer.app.coreIOManager()``: what ``slicer.util.loadVolume`` and ``exportNode`` call,
    done with MRML's own storage nodes and Volumes logic."""

    def __init__(self, scene, logic):
        self.scene, self.logic = scene, logic

    def fileType(self, filename):
        return "SegmentationFile" if str(filename).endswith(".seg.nrrd") else "VolumeFile"

    def loadNodes(self, filetype, properties, loaded, messages):
        filename = properties["fileName"]
        if filetype == "VolumeFile":
            volumes = slicer.vtkSlicerVolumesLogic()
            volumes.SetMRMLApplicationLogic(self.logic)
            volumes.SetMRMLScene(self.scene)
            node = volumes.AddArchetypeVolume(filename, properties.get("name", Path(filename).name.split(".")[0]))
        else:
            node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", Path(filename).name.split(".")[0])
            storage = self.scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
            storage.SetFileName(filename)
            node.SetAndObserveStorageNodeID(storage.GetID())
            if not storage.ReadData(node):
                node = None
            else:
                node.CreateDefaultDisplayNodes()
        if node is None:
            return False
        loaded.AddItem(node)
        return True

    def extractKnownExtension(self, filename, node):
        return ".seg.nrrd" if str(filename).endswith(".seg.nrrd") else Path(filename).suffix

    def fileWriterExtensions(self, node):
        return ["NRRD (.nrrd)", "Segmentation (.seg.nrrd)"]

    def exportNodes(self, node_ids, filenames, properties, harden_transform, messages):
        for node_id, filename in zip(node_ids, filenames):
            node = self.scene.GetNodeByID(node_id)
            storage = node.CreateDefaultStorageNode()
            storage.SetFileName(str(filename))
            storage.SetUseCompression(int(properties.get("useCompression", 1)))
            if not storage.WriteData(node):
                return False
        return True


class ModuleSelector:
    def __init__(self):
        self.selected = []

    def selectModule(self, name):
        self.selected.append(name)


class MainWindow(QtWidgets.QMainWindow):
    def __init__(self):
        super().__init__()
        self.setObjectName("qSlicerMainWindow")
        self.selector = ModuleSelector()

    def moduleSelector(self):
        return self.selector


class SegmentEditorWidget:
    """The Segment Editor's ``editor``: remembers what it was given to edit."""

    def __init__(self):
        self.segmentationNode = self.sourceVolumeNode = None

    def setSegmentationNode(self, node):
        self.segmentationNode = node

    def setSourceVolumeNode(self, node):
        self.sourceVolumeNode = node


def module_representation(logic=None, **attributes):
    """``slicer.modules.<name>``: its ``logic()`` (real MRML logic) and ``widgetRepresentation().self()``,
    which gives ``attributes``."""
    widget = SimpleNamespace(**attributes)
    return SimpleNamespace(widgetRepresentation=lambda: SimpleNamespace(self=lambda: widget), logic=lambda: logic)


def module_logic(logic_class, scene, application_logic):
    """A real module logic (from slicer-core) on the stand-in's scene."""
    logic = logic_class()
    logic.SetMRMLApplicationLogic(application_logic)
    logic.SetMRMLScene(scene)
    return logic


class DICOMExportDialog:
    """DICOMLib's export dialog: records the subject hierarchy item it was opened on."""

    opened: list[int] = []

    def __init__(self, item):
        self.item = item

    def open(self):
        DICOMExportDialog.opened.append(self.item)


class Application:
    """``slicer.app``: the real QApplication plus the qSlicerApplication parts a module uses."""

    def __init__(self, qt_app, scene, home: Path):
        self.qt, self.scene, self.slicerHome = qt_app, scene, str(home)
        self.slicerUserSettingsFilePath = str(home / "settings" / "Slicer.ini")
        self.applicationName = "Slicer (stand-in)"
        self.main_window = MainWindow()
        self.logic = application_logic(scene)
        self.io = IOManager(scene, self.logic)
        self._python_launcher(home)

    def _python_launcher(self, home: Path):
        """``bin/PythonSlicer``: Slicer's Python, here this interpreter (the test machines are POSIX)."""
        launcher = home / "bin" / "PythonSlicer"
        launcher.parent.mkdir(parents=True, exist_ok=True)
        launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        os.chmod(launcher, 0o755)

    @property
    def aboutToQuit(self):
        return self.qt.aboutToQuit  # a signal; PythonQt gives it as an attribute too

    def testingEnabled(self):
        return True  # as under Slicer's test runner: message boxes are logged, prompts answered

    def topLevelWidgets(self):
        return [self.main_window]

    def coreIOManager(self):
        return self.io

    ioManager = coreIOManager

    def processEvents(self):
        self.qt.processEvents()


def application_logic(scene):
    """The MRML application logic with the Colors module's logic, as Slicer's startup makes them."""
    logic = slicer.vtkMRMLApplicationLogic()
    logic.SetMRMLScene(scene)
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(logic)
    colors.SetMRMLScene(scene)
    logic.SetColorLogic(colors)
    logic.SetModuleLogic("Colors", colors)
    return logic


def give_data_nodes_hierarchy_items(scene):
    """Subject hierarchy items for data nodes as they are added (Slicer's SH plugins do this)."""
    hierarchy = scene.GetSubjectHierarchyNode()

    @vtk.calldata_type(vtk.VTK_OBJECT)
    def added(caller, event, node):
        if node.IsA("vtkMRMLDisplayableNode") and not hierarchy.GetItemByDataNode(node):
            hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)

    scene.AddObserver(scene.NodeAddedEvent, added)
    return added


def add_slice_views(scene):
    """The Red, Yellow and Green views' slice and composite nodes, as Slicer's layout makes them."""
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    for name, orientation in SLICE_VIEWS.items():
        node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
        node.SetName(name)
        node.SetLayoutName(name)
        node.SetSingletonTag(name)
        node.SetOrientation(orientation)
        node.SetDimensions(256, 256, 1)
        composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
        composite.SetLayoutName(name)
        composite.SetSingletonTag(name)
