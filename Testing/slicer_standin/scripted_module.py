"""Stand-in for ``slicer.ScriptedLoadableModule``, the base classes of a scripted module (Python in
Slicer, not in slicer-core): the module, its widget (a qMRMLWidget panel), its logic (with the
scene's singleton parameter node) and its test case."""
from __future__ import annotations

import inspect
import unittest
from pathlib import Path
from types import SimpleNamespace

import slicer
from PyQt5 import QtWidgets


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = type(self).__name__


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        from .mrml_widgets import qMRMLWidget

        self.moduleName = type(self).__name__.removesuffix("Widget")
        self.parent = parent or qMRMLWidget()
        if self.parent.layout() is None:
            QtWidgets.QVBoxLayout(self.parent)
        self.layout = self.parent.layout()

    def resourcePath(self, filename):
        return str(Path(inspect.getfile(type(self))).parent / "Resources" / filename)

    def setup(self):
        pass

    def cleanup(self):
        pass


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        scene = slicer.mrmlScene
        node = scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            node = slicer.vtkMRMLScriptedModuleNode()
            node.SetSingletonTag(self.moduleName)
            node.SetModuleName(self.moduleName)
            node.SetName(scene.GenerateUniqueName(self.moduleName))
            node = scene.AddNode(node)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=0):
        print(message)


def module_parent() -> SimpleNamespace:
    """What Slicer passes a module's constructor: its metadata, set by the module."""
    return SimpleNamespace(title="", categories=[], contributors=[], helpText="", acknowledgementText="",
                           dependencies=[])
