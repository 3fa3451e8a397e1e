"""The extension's files: CMake lists match the tree, metadata is complete, the icon is real."""
import py_compile
import re
import subprocess
import tomllib

from PIL import Image

from conftest import REPO
from LungAutoSegLib.requirements import IN_SLICER, NOT_NEEDED_IN_SLICER, SHIPPED_WITH_SLICER

MODULE = REPO / "LungAutoSeg"


def cmake_list(text: str, variable: str) -> set[str]:
    body = re.search(rf"set\({variable}\n(.*?)\n\s*\)", text, re.S).group(1)
    return {line.strip().replace("${MODULE_NAME}", "LungAutoSeg") for line in body.splitlines() if line.strip()}


def test_module_cmake_lists_every_python_file_and_resource():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts = {str(p.relative_to(MODULE)) for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts}
    resources = {str(p.relative_to(MODULE)) for p in (MODULE / "Resources").rglob("*") if p.is_file()}
    assert cmake_list(text, "MODULE_PYTHON_SCRIPTS") == scripts
    assert cmake_list(text, "MODULE_PYTHON_RESOURCES") == resources
    assert "slicerMacroBuildScriptedModule" in text


def test_extension_metadata_is_complete():
    text = (REPO / "CMakeLists.txt").read_text()
    for variable in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf'set\(EXTENSION_{variable} "[^"]+"\)', text), variable
    assert 'set(EXTENSION_DEPENDS "SlicerRT PyTorch")' in text
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    for line in ("project(LungAutoSeg)", "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                 "add_subdirectory(LungAutoSeg)", "include(${Slicer_EXTENSION_CPACK})"):
        assert line in text


def test_module_files_compile(tmp_path):
    for path in MODULE.rglob("*.py"):
        py_compile.compile(str(path), cfile=str(tmp_path / "x.pyc"), doraise=True)


def test_icons_are_128_pixel_pngs():
    for path in (REPO / "LungAutoSeg.png", MODULE / "Resources" / "Icons" / "LungAutoSeg.png"):
        with Image.open(path) as icon:
            assert icon.format == "PNG" and icon.size == (128, 128)
            assert len(set(icon.convert("RGB").getdata())) > 20  # a drawing, not a blank


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    command = re.search(r"<!-- test-command -->\n```\n(.*)\n```", readme).group(1)
    extracted = subprocess.run(
        ["awk", "/<!-- test-command -->/ {getline; getline; print; exit}", "README.md"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert extracted == command and "pytest" in command
    assert re.search(r"<!-- main-command -->\n```\n.*lungautoseg", readme)


def test_the_slicer_module_installs_the_engines_own_pins_and_misses_none():
    """One truth for what the engine needs: pyproject.toml. The module's list takes its pins."""
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    offered = [requirement for _, requirement in IN_SLICER]
    assert set(offered) <= set(dependencies)
    names = {re.match(r"[A-Za-z0-9_.-]+", d).group(0) for d in dependencies}
    accounted = {re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in offered}
    assert names == accounted | set(SHIPPED_WITH_SLICER) | set(NOT_NEEDED_IN_SLICER) | {"torch"}
