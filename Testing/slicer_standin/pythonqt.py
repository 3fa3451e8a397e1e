"""Stand-in for PythonQt, the binding Slicer's Python sees Qt through: PyQt5's real Qt 5.15 widgets,
made to behave as PythonQt's do where the two differ and a module could tell.

- Qt properties are attributes: ``button.text = "Go"``, ``combo.currentText``, ``box.checked``.
  Calling one (``button.text()``, PyQt's way) raises TypeError, as in Slicer.
- Every object is true (PyQt makes an empty combo box or layout false through ``len``).
- ``obj.name`` is the object name (``slicer.util.childWidgetVariables`` relies on it).
- ``qt.QFileDialog.getOpenFileName`` returns the path alone, not PyQt's (path, filter).
- ``qt.QUiLoader`` loads .ui files (PythonQt wraps Qt's QUiLoader; PyQt has ``uic``), with
  the stand-in MRML and CTK widgets for the custom classes the file names.
"""
from __future__ import annotations

import contextlib
import sys
import types

from PyQt5 import QtCore, QtGui, QtWidgets, uic

MODULES = (QtCore, QtGui, QtWidgets)
# The classes whose properties become attributes: those a scripted module's panel is made of. Not
# every class: a property whose getter is a C++ virtual (QWidget::sizeHint, QProgressBar::text)
# would look to PyQt like a Python override, and Qt would call it while painting.
PATCHED = ("QObject", "QTimer", "QWidget", "QFrame", "QAbstractButton", "QPushButton", "QCheckBox", "QRadioButton",
           "QToolButton", "QComboBox", "QLabel", "QProgressBar", "QAbstractScrollArea", "QPlainTextEdit",
           "QTextEdit", "QAbstractItemView", "QListView", "QListWidget", "QLineEdit", "QAbstractSlider", "QSlider",
           "QAbstractSpinBox", "QSpinBox", "QDoubleSpinBox", "QGroupBox", "QLayout", "QBoxLayout", "QVBoxLayout",
           "QHBoxLayout", "QFormLayout", "QGridLayout", "QMainWindow", "QDialog", "QMessageBox")
VIRTUAL = {"sizeHint", "minimumSizeHint", "QProgressBar.text"}
_patched: list[tuple[type, str, object, object]] = []  # (class, name, PyQt's attribute, PythonQt's)


def _own_properties(cls) -> list[str]:
    meta = cls.staticMetaObject
    return [str(meta.property(i).name()) for i in range(meta.propertyOffset(), meta.propertyCount())]


def _attribute_property(name: str) -> property:
    return property(lambda self: self.property(name), lambda self, value: self.setProperty(name, value))


def patch_classes(classes) -> None:
    """Every Qt property a class declares becomes an attribute of that class."""
    for cls in classes:
        for name in _own_properties(cls):
            if name in VIRTUAL or f"{cls.__name__}.{name}" in VIRTUAL:
                continue
            original = cls.__dict__.get(name)
            standin = _attribute_property(name)
            setattr(cls, name, standin)
            _patched.append((cls, name, original, standin))


def _panel_classes():
    for name in PATCHED:
        yield next(getattr(module, name) for module in MODULES if hasattr(module, name))


@contextlib.contextmanager
def pyqt_semantics():
    """PyQt's own attributes back for code written for PyQt (its ``uic`` loader)."""
    for cls, name, original, _ in _patched:
        if original is None:
            delattr(cls, name)
        else:
            setattr(cls, name, original)
    try:
        yield
    finally:
        for cls, name, _, standin in _patched:
            setattr(cls, name, standin)


class QUiLoader:
    """PythonQt's QUiLoader: ``load(qfile)`` -> the top widget, custom classes from ``custom``."""

    custom: dict[str, type] = {}  # class name -> stand-in class (the MRML and CTK widgets)

    def load(self, qfile, parent=None):
        path = qfile.fileName()
        qfile.close()
        for name, cls in self.custom.items():  # uic imports a custom class from the module its header names
            sys.modules.setdefault(name, types.SimpleNamespace(**{name: cls}))
        with pyqt_semantics():
            return uic.loadUi(path)


class QFileDialog(QtWidgets.QFileDialog):
    @staticmethod
    def getOpenFileName(parent=None, caption="", directory="", filter=""):
        return QtWidgets.QFileDialog.getOpenFileName(parent, caption, directory, filter)[0]


def qt_module() -> types.ModuleType:
    """The ``qt`` module a Slicer module imports."""
    patch_classes(_panel_classes())
    QtCore.QObject.name = _attribute_property("objectName")
    QtCore.QObject.__bool__ = lambda self: True
    module = types.ModuleType("qt", "Stand-in for Slicer's PythonQt ``qt`` module (PyQt5 underneath).")
    for source in MODULES:
        module.__dict__.update({k: v for k, v in vars(source).items() if not k.startswith("_")})
    module.QUiLoader, module.QFileDialog = QUiLoader, QFileDialog
    return module
