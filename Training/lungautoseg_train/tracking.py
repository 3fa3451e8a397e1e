"""Weights & Biases tracking, offline unless the user has configured an account.

Mode: ``--wandb`` / ``wandb.mode`` if given, else ``WANDB_MODE``, else online when an API
key is configured (``WANDB_API_KEY`` or a netrc entry for api.wandb.ai), else offline.
An online start that cannot reach the server within ``INIT_TIMEOUT_S`` continues offline
with a warning (``wandb sync`` uploads it later) instead of blocking for 100 s.
W&B's data folder (where artifact files are staged) is put inside the run's output
folder, so the run folder and everything its artifacts reference travel together.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import netrc
import os
import subprocess
import sys
from pathlib import Path

INIT_TIMEOUT_S = 20
VERSIONED = ("lungautoseg", "torch", "monai", "numpy", "SimpleITK", "pydicom", "wandb")


def resolve_mode(requested: str | None) -> str:
    if requested:
        return requested
    environment = os.environ.get("WANDB_MODE", "").strip().lower()
    if environment in ("online", "offline", "disabled"):
        return environment
    if environment == "dryrun":
        return "offline"
    return "online" if _api_key_configured() else "offline"


def _api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def provenance(csv_path: str) -> dict:
    """What a run needs to be reproduced: code version, data version, package versions."""
    repository = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repository, capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=repository, capture_output=True,
                                    text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    versions = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"git_commit": commit, "git_dirty": dirty,
            "dataset_csv_sha256": hashlib.sha256(Path(csv_path).read_bytes()).hexdigest(),
            "packages": versions, "python": sys.version.split()[0]}


def start_run(config: dict, mode: str, run_id: str | None, output_dir: Path, job_type: str = "train"):
    """A W&B run (resumed when ``run_id`` is given); returns the run or None when disabled."""
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_DATA_DIR", str(output_dir / "wandb-data"))
    os.environ.setdefault("WANDB_CACHE_DIR", str(output_dir / "wandb-data" / "cache"))
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    settings = config["wandb"]
    arguments = dict(project=settings["project"], entity=settings["entity"], name=config["name"],
                     tags=settings["tags"], config=config, dir=str(output_dir), id=run_id,
                     resume="allow" if run_id else None, job_type=job_type)
    try:
        return wandb.init(mode=mode, settings=wandb.Settings(init_timeout=INIT_TIMEOUT_S), **arguments)
    except Exception as error:  # wandb raises several types for "server not reachable"
        if mode != "online":
            raise
        print(f"warning: W&B online start failed ({type(error).__name__}: {error}); logging offline, "
              f"upload later with `wandb sync {output_dir / 'wandb'}`", file=sys.stderr)
        return wandb.init(mode="offline", **arguments)
