"""Stand-ins for the C++ widgets Slicer's .ui files name: qMRMLWidget, qMRMLNodeComboBox and
ctkCollapsibleButton. Their properties, signals and slots are the real classes' (the ones a
module may use); the scene they show is the real MRML scene from slicer-core."""
from __future__ import annotations

from PyQt5 import QtCore, QtGui, QtWidgets, sip
from PyQt5.QtCore import pyqtProperty, pyqtSignal, pyqtSlot


class _AnySignature:
    """A bound signal that ``signal["vtkMRMLScene*"]`` also gives: the .ui file's connections name
    C++ types that PyQt cannot map, PythonQt's way of passing any object."""

    def __init__(self, bound):
        self._bound = bound

    def __getitem__(self, signature):
        return self._bound

    def __getattr__(self, name):
        return getattr(self._bound, name)


class qMRMLWidget(QtWidgets.QWidget):
    _sceneChanged = pyqtSignal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    @property
    def mrmlSceneChanged(self):
        return _AnySignature(self._sceneChanged)

    def mrmlScene(self):
        return self._scene

    def setMRMLScene(self, scene):
        self._scene = scene
        self._sceneChanged.emit(scene)


class qMRMLNodeComboBox(QtWidgets.QWidget):
    """A node selector: the scene's nodes of ``nodeTypes``, kept current as nodes come and go.
    With ``noneEnabled`` false it selects the first node there is, as the real one does."""

    currentNodeChanged = pyqtSignal([object], [bool])
    currentNodeIDChanged = pyqtSignal(str)
    _sceneChanged = pyqtSignal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._types, self._none, self._none_display = [], False, "None"
        self._flags = {"addEnabled": True, "removeEnabled": True, "renameEnabled": False, "showHidden": False}
        self._scene, self._observers, self._nodes, self._current = None, [], [], None
        self._box = QtWidgets.QComboBox(self)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self._box)
        self._box.activated.connect(lambda index: self.setCurrentNode(self._choices()[index]))

    @property
    def mrmlSceneChanged(self):
        return _AnySignature(self._sceneChanged)

    def _get_types(self):
        return list(self._types)

    def setNodeTypes(self, types):
        self._types = list(types)
        self._refresh()

    nodeTypes = pyqtProperty("QStringList", _get_types, setNodeTypes)

    def _get_none(self):
        return self._none

    def setNoneEnabled(self, value):
        self._none = bool(value)
        self._refresh()

    noneEnabled = pyqtProperty(bool, _get_none, setNoneEnabled)

    def _get_none_display(self):
        return self._none_display

    def setNoneDisplay(self, text):
        self._none_display = text
        self._refresh()

    noneDisplay = pyqtProperty(str, _get_none_display, setNoneDisplay)

    def _flag(name):  # noqa: N805 - builds a property per flag
        return pyqtProperty(bool, lambda self: self._flags[name], lambda self, v: self._flags.__setitem__(name, bool(v)))

    addEnabled, removeEnabled = _flag("addEnabled"), _flag("removeEnabled")
    renameEnabled, showHidden = _flag("renameEnabled"), _flag("showHidden")
    del _flag

    def setAddEnabled(self, value):
        self._flags["addEnabled"] = bool(value)

    def setRemoveEnabled(self, value):
        self._flags["removeEnabled"] = bool(value)

    def setRenameEnabled(self, value):
        self._flags["renameEnabled"] = bool(value)

    def setShowHidden(self, value):
        self._flags["showHidden"] = bool(value)
        self._refresh()

    def _get_current_id(self):
        return self._current.GetID() if self._current is not None else ""

    currentNodeID = pyqtProperty(str, _get_current_id)

    @pyqtSlot(object)
    def setMRMLScene(self, scene):
        for observer in self._observers:
            self._scene.RemoveObserver(observer)
        self._scene, self._observers = scene, []
        if scene is not None:
            events = (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent, scene.EndImportEvent)
            self._observers = [scene.AddObserver(event, self._scene_changed) for event in events]
        self._refresh()

    def _scene_changed(self, *_):
        if sip.isdeleted(self._box):  # the panel is gone: stop listening, as the real one does
            for observer in self._observers:
                self._scene.RemoveObserver(observer)
            self._observers = []
            return
        self._refresh()

    def mrmlScene(self):
        return self._scene

    def currentNode(self):
        return self._current

    def setCurrentNode(self, node):
        if node is self._current:
            return
        self._current = node
        self._show_current()
        self.currentNodeChanged[object].emit(node)
        self.currentNodeChanged[bool].emit(node is not None)
        self.currentNodeIDChanged.emit(self._get_current_id())

    def setCurrentNodeID(self, node_id):
        self.setCurrentNode(self._scene.GetNodeByID(node_id) if self._scene is not None and node_id else None)

    def nodeCount(self):
        return len(self._nodes)

    def _choices(self):
        return ([None] if self._none else []) + self._nodes

    def _refresh(self):
        nodes = []
        if self._scene is not None:
            for node_type in self._types:
                for index in range(self._scene.GetNumberOfNodesByClass(node_type)):
                    node = self._scene.GetNthNodeByClass(index, node_type)
                    if self._flags["showHidden"] or not node.GetHideFromEditors():
                        nodes.append(node)
        self._nodes = nodes
        self._box.blockSignals(True)
        self._box.clear()
        self._box.addItems([self._none_display if n is None else n.GetName() for n in self._choices()])
        self._box.blockSignals(False)
        if self._current is not None and self._current not in nodes:
            self.setCurrentNode(None)
        if self._current is None and not self._none and nodes:
            self.setCurrentNode(nodes[0])
        self._show_current()

    def _show_current(self):
        choices = self._choices()
        if self._current in choices:
            self._box.setCurrentIndex(choices.index(self._current))


class ctkCollapsibleButton(QtWidgets.QWidget):
    """A titled section whose contents a click on the title hides (``collapsed``)."""

    contentsCollapsed = pyqtSignal(bool)
    HEADER = 24

    def __init__(self, parent=None):
        super().__init__(parent)
        self._text, self._collapsed = "", False

    def _get_text(self):
        return self._text

    def setText(self, text):
        self._text = text
        self.update()

    text = pyqtProperty(str, _get_text, setText)

    def _get_collapsed(self):
        return self._collapsed

    def setCollapsed(self, collapsed):
        self._collapsed = bool(collapsed)
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
            child.setVisible(not self._collapsed)
        self.setMaximumHeight(self.HEADER if self._collapsed else 16777215)
        self.contentsCollapsed.emit(self._collapsed)

    collapsed = pyqtProperty(bool, _get_collapsed, setCollapsed)

    def showEvent(self, event):
        layout = self.layout()
        if layout is not None:
            layout.setContentsMargins(9, self.HEADER + 2, 9, 9)
        self.setCollapsed(self._collapsed)
        super().showEvent(event)

    def mousePressEvent(self, event):
        if event.pos().y() <= self.HEADER:
            self.setCollapsed(not self._collapsed)

    def paintEvent(self, event):
        painter = QtGui.QPainter(self)
        header = QtCore.QRect(0, 0, self.property("width"), self.HEADER)
        painter.fillRect(header, self.property("palette").button())
        painter.drawText(header.adjusted(8, 0, 0, 0), QtCore.Qt.AlignVCenter, ("▸ " if self._collapsed else "▾ ") + self._text)


CLASSES = {cls.__name__: cls for cls in (qMRMLWidget, qMRMLNodeComboBox, ctkCollapsibleButton)}
