"""The Slicer module's UI file and code agree (what can be checked without the Slicer application)."""
import ast
import re
import xml.etree.ElementTree as ElementTree

from conftest import REPO

MODULE = REPO / "LungAutoSeg"
BUTTONS = {"QPushButton"}
COMBO = {"QComboBox"}
NODE_COMBO = {"qMRMLNodeComboBox"}
# The widget classes that offer each attribute the module uses.
OFFERED_BY = {
    "clicked": BUTTONS, "toggled": BUTTONS | {"QCheckBox"}, "enabled": BUTTONS | COMBO | NODE_COMBO,
    "text": BUTTONS | {"QLabel"}, "addItems": COMBO, "addItem": COMBO, "clear": COMBO | {"QPlainTextEdit"},
    "currentData": COMBO, "currentText": COMBO, "currentIndexChanged": COMBO, "findText": COMBO,
    "setCurrentIndex": COMBO, "currentNode": NODE_COMBO, "currentNodeID": NODE_COMBO,
    "setCurrentNode": NODE_COMBO, "currentNodeChanged": NODE_COMBO, "value": {"QProgressBar"},
    "appendPlainText": {"QPlainTextEdit"}, "layout": {"QFrame", "QWidget"},
}


def ui_widgets() -> dict[str, str]:
    tree = ElementTree.parse(MODULE / "Resources" / "UI" / "LungAutoSeg.ui")
    return {w.get("name"): w.get("class") for w in tree.iter("widget")}


def test_the_ui_file_parses_and_names_its_widgets_once():
    tree = ElementTree.parse(MODULE / "Resources" / "UI" / "LungAutoSeg.ui")
    names = [w.get("name") for w in tree.iter("widget")]
    assert len(names) == len(set(names))
    assert ui_widgets()["applyButton"] == "QPushButton"
    apply_text = next(w for w in tree.iter("widget") if w.get("name") == "applyButton").find("property/string").text
    assert apply_text == "Segment right lung"


def test_every_ui_widget_the_module_uses_exists_with_a_fitting_class():
    source = (MODULE / "LungAutoSeg.py").read_text()
    widgets = ui_widgets()
    used = set(re.findall(r"self\.ui\.(\w+)\.(\w+)", source))
    assert len(used) > 20
    for name, attribute in used:
        assert name in widgets, f"self.ui.{name} is not in LungAutoSeg.ui"
        assert widgets[name] in OFFERED_BY[attribute], f"{name} is a {widgets[name]}, which has no {attribute}"
    for name in re.findall(r"self\.ui\.(\w+)\b(?!\.)", source):
        assert name in widgets, f"self.ui.{name} is not in LungAutoSeg.ui"


def test_the_module_defines_module_widget_logic_and_test_classes():
    tree = ast.parse((MODULE / "LungAutoSeg.py").read_text())
    classes = {node.name: [b.id for b in node.bases if isinstance(b, ast.Name)]
               for node in tree.body if isinstance(node, ast.ClassDef)}
    assert classes["LungAutoSeg"] == ["ScriptedLoadableModule"]
    assert classes["LungAutoSegWidget"] == ["ScriptedLoadableModuleWidget"]
    assert classes["LungAutoSegLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["LungAutoSegTest"] == ["ScriptedLoadableModuleTest"]
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in (MODULE / "CMakeLists.txt").read_text()


def test_the_extension_index_draft_matches_the_cmake_metadata():
    import json

    entry = json.loads((REPO / ".extension-index" / "LungAutoSeg.json").read_text())
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert set(entry) <= {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_revision",
                          "scm_type", "scm_url", "tier"}  # the schema allows no other property
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert f'set(EXTENSION_CATEGORY "{entry["category"]}")' in cmake
    assert f'set(EXTENSION_DEPENDS "{" ".join(entry["build_dependencies"])}")' in cmake
