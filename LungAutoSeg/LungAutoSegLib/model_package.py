"""Model packages: the contract between Training/ and the engine (DESIGN.md).

A package is a folder ``<name>-<version>/`` (or a .zip of one) holding ``manifest.json``
and the weights as safetensors, a format that holds only tensors, so loading a package
can never execute code. The manifest carries everything inference needs (structures,
network, preprocessing, inference settings) and the weights' SHA-256, checked on load.

A cascade (schema 2, ``CascadePackage``) holds single packages as stage folders, run in
order; a later stage looks only inside its ``crop`` around what earlier stages found. Its
manifest lists every structure once, with the label the engine writes, and its weights
SHA-256 covers every stage's.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_folder
from .cascade import Crop
from .errors import InputError
from .networks import build_network, downsampling_factor
from .plan import ModelPlan

SCHEMA_VERSION = 1
CASCADE_SCHEMA_VERSION = 2
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "model.safetensors"


def _resources() -> Path:
    """The module's Resources folder: beside the package in a checkout and in Slicer, inside it
    (``LungAutoSegLib/resources``) when pip installed the package from a wheel."""
    installed = Path(__file__).resolve().parent / "resources"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "Resources"


BUNDLED_MODELS = _resources() / "Models"
REQUIRED_KEYS = ("schema_version", "name", "version", "structures", "network", "preprocessing",
                 "inference", "weights")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelPackage:
    root: Path
    manifest: dict
    plan: ModelPlan  # the manifest's preprocessing and inference settings, validated

    @property
    def name(self) -> str:
        return f"{self.manifest['name']}-{self.manifest['version']}"

    @property
    def structures(self) -> list[dict]:
        return self.manifest["structures"]

    @property
    def structure_names(self) -> list[str]:
        return [s["name"] for s in self.structures]

    @property
    def downsampling_factor(self) -> int:
        return downsampling_factor(self.manifest["network"])

    @property
    def weights_path(self) -> Path:
        return self.root / self.manifest["weights"]["file"]

    def load_network(self, device: str = "cpu"):
        """The network in eval mode with the package's weights (tensors only, no pickle)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        network = build_network(self.manifest["network"], out_channels=len(self.structures) + 1, for_inference=True)
        try:
            state = load_file(str(self.weights_path), device=str(device))
            network.load_state_dict(state, strict=True)
        except (SafetensorError, RuntimeError) as error:
            raise InputError(f"weights do not fit the manifest's network: {error}", self.weights_path) from error
        return network.to(device).eval()


@dataclass
class CascadeStage:
    package: ModelPackage
    crop: Crop | None  # None: the whole CT


@dataclass
class CascadePackage:
    """Stages run in order; each labels its own structures, written under this manifest's labels."""

    root: Path
    manifest: dict
    stages: list[CascadeStage]

    name = ModelPackage.name
    structures = ModelPackage.structures
    structure_names = ModelPackage.structure_names

    def label_of(self, name: str) -> int:
        return self.structure_names.index(name) + 1

    def load_network(self, device: str = "cpu") -> list:
        """One network per stage, in order."""
        return [stage.package.load_network(device) for stage in self.stages]


def load_package(path: str | os.PathLike | None = None) -> ModelPackage | CascadePackage:
    """Open and verify a package folder or zip; ``None`` = the bundled model."""
    path = Path(path) if path is not None else bundled_package()
    if path.is_file() and zipfile.is_zipfile(path):
        path = _extract_zip(path)
    manifest = _read_manifest(path)
    manifest_path = path / MANIFEST_NAME
    if isinstance(manifest, dict) and manifest.get("schema_version") == CASCADE_SCHEMA_VERSION:
        return _load_cascade(path, manifest)
    package = ModelPackage(path, manifest, _checked_plan(manifest, manifest_path))
    weights = package.weights_path
    if weights.parent.resolve() != path.resolve():
        raise InputError(f"weights file must lie in the package folder: {manifest['weights']['file']!r}", manifest_path)
    if not weights.is_file():
        raise InputError(f"manifest names a weights file that is missing: {weights.name}", path)
    if sha256_of(weights) != manifest["weights"]["sha256"]:
        raise InputError("weights checksum mismatch: the file is corrupt or was altered", weights)
    return package


MAX_MANIFEST_BYTES = 1 << 20  # a real manifest is a few kB


def _not_a_number(token: str):
    raise ValueError(f"{token} is not a number a manifest may hold")


def _read_manifest(path: Path):
    """The manifest as JSON, refused cleanly whatever the file holds: too large, too deeply
    nested for the parser, NaN or Infinity (which Python's JSON would take), not UTF-8."""
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise InputError(f"not a model package: no {MANIFEST_NAME}", path)
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise InputError(f"manifest is larger than {MAX_MANIFEST_BYTES // 1024} kB: not a model manifest",
                         manifest_path)
    try:
        return json.loads(manifest_path.read_text(encoding="utf-8"), parse_constant=_not_a_number)
    except RecursionError:
        raise InputError("manifest is nested too deeply to be a model manifest", manifest_path) from None
    except (UnicodeDecodeError, ValueError) as error:  # json.JSONDecodeError is a ValueError
        raise InputError(f"manifest is not valid JSON: {error}", manifest_path) from error


def stages_sha256(stages: list[ModelPackage]) -> str:
    """A cascade's weights checksum: over its stages' weights checksums, in order."""
    return hashlib.sha256("\n".join(p.manifest["weights"]["sha256"] for p in stages).encode()).hexdigest()


def _load_cascade(path: Path, manifest: dict) -> CascadePackage:
    """A schema-2 package: every stage folder a verified single package, every structure made
    by exactly one stage, every crop around structures of earlier stages."""
    where = path / MANIFEST_NAME
    for key in ("name", "version", "structures", "stages", "weights"):
        if key not in manifest:
            raise InputError(f"cascade manifest lacks {key}", where)
    for key in ("name", "version"):
        if not isinstance(manifest[key], str) or not NAME_PATTERN.fullmatch(manifest[key]):
            raise InputError(f"manifest {key} must be letters, digits, '.', '_' or '-' (got {manifest[key]!r})", where)
    _check_structures(manifest["structures"], where)
    entries = manifest["stages"]
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise InputError("cascade manifest stages must be a list of objects", where)
    stages, made = [], []
    for n, entry in enumerate(entries):
        folder = entry.get("folder")
        if not isinstance(folder, str) or not NAME_PATTERN.fullmatch(folder):
            raise InputError(f"cascade stage {n + 1} needs a folder name inside the package (got {folder!r})", where)
        stage = load_package(path / folder)
        if not isinstance(stage, ModelPackage):
            raise InputError("a cascade stage must be a single package", path / folder)
        crop = None
        if entry.get("crop") is not None:
            try:
                crop = Crop.from_dict(entry["crop"])
            except InputError as error:
                raise InputError(str(error), where) from None
            if n == 0 or not set(crop.around) <= set(made):
                raise InputError(f"stage {folder} crops around {list(crop.around)}, which no earlier stage makes", where)
        made += stage.structure_names
        stages.append(CascadeStage(stage, crop))
    names = [s["name"] for s in manifest["structures"]]
    if sorted(made) != sorted(names):
        raise InputError(f"the stages make {made}, the manifest lists {names}: each structure must come from one stage",
                         where)
    weights = manifest["weights"]
    if not isinstance(weights, dict) or weights.get("sha256") != stages_sha256([s.package for s in stages]):
        raise InputError("weights checksum mismatch: a stage was altered or replaced", where)
    return CascadePackage(path, manifest, stages)


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # also a folder name: no "/" or ".."
SPACING_MM = (0.2, 20.0)   # model grid spacing a package may ask for


def _checked_plan(manifest, path: Path) -> ModelPlan:
    """Everything the engine will use, checked here: a manifest is untrusted data, and a bad
    one must be refused with its reason, not fail deep inside the network or the resampler."""
    if not isinstance(manifest, dict):
        raise InputError("manifest must be a JSON object", path)
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise InputError(f"manifest lacks {', '.join(missing)}", path)
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise InputError(f"unsupported manifest schema_version {manifest['schema_version']!r} "
                         f"(this LungAutoSeg reads {SCHEMA_VERSION} and {CASCADE_SCHEMA_VERSION})", path)
    for key in ("name", "version"):
        if not isinstance(manifest[key], str) or not NAME_PATTERN.fullmatch(manifest[key]):
            raise InputError(f"manifest {key} must be letters, digits, '.', '_' or '-' (got {manifest[key]!r})", path)
    _check_structures(manifest["structures"], path)
    weights = manifest["weights"]
    if not isinstance(weights, dict) or not isinstance(weights.get("file"), str) \
            or not isinstance(weights.get("sha256"), str):
        raise InputError("manifest weights must give file and sha256", path)
    if not isinstance(manifest["network"], dict) or not isinstance(manifest["inference"], dict):
        raise InputError("manifest network and inference must be objects", path)
    if not isinstance(manifest["preprocessing"], dict):
        raise InputError("manifest preprocessing must be an object", path)
    try:
        factor = downsampling_factor(manifest["network"])
    except (TypeError, ValueError) as error:
        raise InputError(f"manifest network strides are not numbers: {error}", path) from error
    try:
        plan = ModelPlan.from_manifest(manifest, factor)
    except InputError as error:
        raise InputError(str(error), path) from error
    spacing = plan.preprocessing.spacing
    if not all(SPACING_MM[0] <= s <= SPACING_MM[1] for s in spacing):
        raise InputError(f"manifest preprocessing spacing {list(spacing)} is outside {SPACING_MM} mm", path)
    return plan


def _check_structures(structures, path: Path) -> None:
    if (not isinstance(structures, list) or not structures
            or [s.get("label") if isinstance(s, dict) else None for s in structures]
            != list(range(1, len(structures) + 1))):
        raise InputError("manifest structures must be a list with labels 1..n in order", path)
    for s in structures:
        if not isinstance(s.get("name"), str) or not 0 < len(s["name"]) <= 64:
            raise InputError(f"manifest structure {s.get('label')} needs a name of 1-64 characters", path)
        colour = s.get("colour")
        if not (isinstance(colour, list) and len(colour) == 3
                and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)):
            raise InputError(f"manifest structure {s['name']!r} needs a colour of three integers 0-255", path)
    if len({s["name"] for s in structures}) != len(structures):
        raise InputError("manifest structure names must differ", path)


def _extract_zip(path: Path) -> Path:
    """Unpack into a fresh temporary folder, refusing members that would land outside it.
    The folder lives as long as the process (the package's weights are read from it)."""
    target = Path(tempfile.mkdtemp(prefix="lungautoseg-model-"))
    atexit.register(shutil.rmtree, target, True)
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                destination = (target / member).resolve()
                if not destination.is_relative_to(target.resolve()) or member.startswith("/"):
                    raise InputError(f"zip member would be written outside the package: {member!r}", path)
            archive.extractall(target)
    except zipfile.BadZipFile as error:
        shutil.rmtree(target, ignore_errors=True)
        raise InputError(f"corrupt zip: {error}", path) from error
    except InputError:
        shutil.rmtree(target, ignore_errors=True)
        raise
    manifests = list(target.glob(MANIFEST_NAME)) or list(target.glob(f"*/{MANIFEST_NAME}"))
    return manifests[0].parent if len(manifests) == 1 else target


def bundled_package(folder: Path = BUNDLED_MODELS) -> Path:
    """The default among the packages in ``folder``: the one offering the most structures, then the
    newest by version number (as text, lungs-10.0.0 < lungs-9.0.0)."""
    packages = sorted((p for p in folder.glob("*") if (p / MANIFEST_NAME).is_file()), key=_default_key)
    if not packages:
        raise InputError("no bundled model found", folder)
    return packages[-1]


def _default_key(folder: Path) -> tuple:
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        version, structures = manifest.get("version", ""), len(manifest.get("structures") or [])
    except (OSError, ValueError, AttributeError, TypeError, RecursionError) as error:
        raise InputError(f"unreadable model manifest ({type(error).__name__})", folder / MANIFEST_NAME) from None
    return structures, tuple(int(part) if part.isdigit() else -1 for part in str(version).split(".")), folder.name


def write_package(out: str | os.PathLike, manifest: dict, state_dict: dict, *, overwrite: bool = False,
                  extra_files: dict[str, str] | None = None) -> Path:
    """Write ``out/<name>-<version>/`` with weights, manifest (checksum filled in) and extras.
    ``manifest["preprocessing"]`` and ``["inference"]`` are best ``ModelPlan.to_manifest()``'s."""
    from safetensors.torch import save_file

    folder = Path(out) / f"{manifest['name']}-{manifest['version']}"
    with atomic_folder(folder, overwrite=overwrite) as staging:
        weights = staging / WEIGHTS_NAME
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(weights))
        manifest = {**manifest, "schema_version": SCHEMA_VERSION,
                    "weights": {"file": WEIGHTS_NAME, "format": "safetensors", "sha256": sha256_of(weights)}}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
    return folder


def write_cascade(out: str | os.PathLike, manifest: dict, stages: list[tuple[str | os.PathLike, Crop | None]], *,
                  overwrite: bool = False, extra_files: dict[str, str] | None = None) -> Path:
    """Write ``out/<name>-<version>/`` holding a copy of each single package (``stages``: its
    folder and crop, in order) and the cascade manifest; ``manifest["structures"]`` lists them
    all in the labels the engine writes."""
    folder = Path(out) / f"{manifest['name']}-{manifest['version']}"
    packages = [load_package(source) for source, _ in stages]
    entries = []
    with atomic_folder(folder, overwrite=overwrite) as staging:
        for package, (_, crop) in zip(packages, stages):
            name = package.manifest["name"]
            shutil.copytree(package.root, staging / name, ignore=shutil.ignore_patterns("*.zip"))
            entries.append({"folder": name, "crop": crop.to_dict() if crop else None})
        manifest = {**manifest, "schema_version": CASCADE_SCHEMA_VERSION, "stages": entries,
                    "weights": {"sha256": stages_sha256(packages)}}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text)
    return folder
