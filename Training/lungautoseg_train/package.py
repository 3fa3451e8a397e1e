"""``lungautoseg-train package``: a training checkpoint -> a model package (DESIGN.md contract)."""
from __future__ import annotations

import datetime
import shutil
from pathlib import Path

from LungAutoSegLib.model_package import MANIFEST_NAME, write_package
from LungAutoSegLib.structures import structure_entries

from .checkpoints import load_checkpoint
from .config import model_plan, with_settings

CARD_NAME = "MODEL_CARD.md"


def manifest_from_checkpoint(state: dict, metrics: dict | None = None, run=None) -> dict:
    config = state["config"]
    wandb_run = None
    if run is not None:
        wandb_run = {"id": run.id, "project": run.project, "entity": run.entity or None,
                     "url": run.url if not run.offline else None}
    elif state.get("wandb_run_id"):
        wandb_run = {"id": state["wandb_run_id"], "project": config["wandb"]["project"]}
    return {
        "name": config["name"], "version": str(config["version"]),
        "description": f"MONAI {config['network']['class']} for {', '.join(config['data']['structures'])} on CT",
        "structures": structure_entries(config["data"]["structures"]),
        "network": config["network"],
        **model_plan(config).to_manifest(),
        "provenance": {
            "training_data": config["data"]["csv"], "validation_fold": config["data"]["fold"],
            "epochs_trained": state["epoch"], "best_epoch": state["best_epoch"] + 1,
            "wandb_run": wandb_run, **state.get("provenance", {}),
            "packaged": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "metrics": metrics or {},
    }


def default_card(manifest: dict) -> str:
    provenance = manifest["provenance"]
    lines = [f"# {manifest['name']} {manifest['version']}", "", manifest["description"], "",
             f"- Structures: {', '.join(s['name'] for s in manifest['structures'])}",
             f"- Network: {manifest['network']['class']}; spacing {manifest['preprocessing']['spacing']} mm",
             f"- Trained on: {provenance['training_data']} (validation fold {provenance['validation_fold']}), "
             f"{provenance['epochs_trained']} epochs, best epoch {provenance['best_epoch']}",
             f"- Code: git {provenance.get('git_commit')}; W&B run: {(provenance.get('wandb_run') or {}).get('id')}",
             f"- Metrics: {manifest['metrics']}", "",
             "Not clinically validated: every contour must be reviewed and corrected by a qualified person."]
    return "\n".join(lines) + "\n"


def package_checkpoint(checkpoint: str | Path, out: str | Path, *, overwrite: bool = False,
                       metrics: dict | None = None, run=None, card: str | Path | None = None,
                       make_zip: bool = False, settings: list[str] = ()) -> Path:
    """``settings``: ``key.sub=value`` changes to the run's config before packaging, for what
    does not touch the weights (``version=2.1.0``, ``postprocessing.edge_hu=-250``)."""
    state = load_checkpoint(checkpoint)
    if settings:
        state["config"] = with_settings(state["config"], settings)
    manifest = manifest_from_checkpoint(state, metrics, run)
    card_text = Path(card).read_text() if card else default_card(manifest)
    folder = write_package(out, manifest, state["model"], overwrite=overwrite, extra_files={CARD_NAME: card_text})
    if make_zip:
        shutil.make_archive(str(folder), "zip", root_dir=folder.parent, base_dir=folder.name)
    return folder


def log_model_artifact(run, folder: Path) -> None:
    """The package as a W&B model artifact (aliases best, latest; metadata = the manifest)."""
    import json

    import wandb

    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    artifact = wandb.Artifact(f"{manifest['name']}-model", type="model", metadata=manifest,
                              description=manifest["description"])
    for path in sorted(folder.iterdir()):
        artifact.add_file(str(path), name=path.name, policy="immutable")  # referenced in place, no copy
    run.log_artifact(artifact, aliases=["best", "latest"])
