"""A stand-in for the 3D Slicer application, for running the LungAutoSeg module unchanged in tests.

Real underneath: Qt 5.15 (PyQt5, offscreen), Slicer's MRML scene, logics and ``slicer.util``
(slicer-core). Stand-ins only for what exists in Slicer's C++ alone, each small and named so:
PythonQt's way of exposing Qt (``pythonqt``), the qMRML/CTK widgets a .ui file names
(``mrml_widgets``), ``slicer.app``, the main window, ``slicer.modules``' Segment Editor and
DICOMLib's export dialog (``application``), and the ScriptedLoadableModule base classes
(``scripted_module``). What only a real Slicer can show (SlicerRT's RTSTRUCT export, the
rendered views) is listed in the README's manual check list.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

# The module under test; a test points it at a deliberately broken copy to show the tests catch it.
MODULE_FOLDER = Path(os.environ.get("LUNGAUTOSEG_MODULE_FOLDER") or Path(__file__).resolve().parents[2] / "LungAutoSeg")
_installed: SimpleNamespace | None = None


def install(home: Path) -> SimpleNamespace:
    """Start the stand-in once per process (Qt allows one application); later calls return it.
    ``home``: a folder for Slicer's home (bin/PythonSlicer) and user settings."""
    global _installed
    if _installed is not None:
        return _installed
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("XDG_RUNTIME_DIR", str(home))
    from PyQt5 import QtWidgets

    from . import application, mrml_widgets, pythonqt, scripted_module, segmentations

    qt_app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["slicer-stand-in"])
    sys.modules["qt"] = pythonqt.qt_module()
    pythonqt.patch_classes(mrml_widgets.CLASSES.values())
    pythonqt.QUiLoader.custom = mrml_widgets.CLASSES
    import slicer

    scene = slicer.vtkMRMLScene()
    segmentations.register_converter_rules()
    application.add_slice_views(scene)
    application.give_data_nodes_hierarchy_items(scene)
    editor = application.SegmentEditorWidget()
    slicer.mrmlScene, slicer.app = scene, application.Application(qt_app, scene, home)
    logics = {name: application.module_logic(logic_class, scene, slicer.app.logic) for name, logic_class in
              (("segmentations", slicer.vtkSlicerSegmentationsModuleLogic), ("volumes", slicer.vtkSlicerVolumesLogic))}
    slicer.modules = SimpleNamespace(segmenteditor=application.module_representation(editor=editor),
                                     **{name: application.module_representation(logic) for name, logic in logics.items()})
    for name, cls in mrml_widgets.CLASSES.items():
        setattr(slicer, name, cls)
    slicer.ScriptedLoadableModule = scripted_module
    sys.modules["slicer.ScriptedLoadableModule"] = scripted_module
    sys.modules["DICOMLib"] = SimpleNamespace(DICOMExportDialog=application.DICOMExportDialog)
    sys.path.insert(0, str(MODULE_FOLDER))
    import LungAutoSeg  # the module itself, unchanged

    _installed = SimpleNamespace(qt_app=qt_app, scene=scene, app=slicer.app, editor=editor, module=LungAutoSeg,
                                 exports=application.DICOMExportDialog.opened,
                                 selected_modules=slicer.app.main_window.selector.selected)
    return _installed
