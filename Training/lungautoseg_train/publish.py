"""The end of a training run: its best checkpoint as a model package, that package scored on the
validation CTs' own grids (what users would get), and both logged to the run's W&B record."""
from __future__ import annotations

from pathlib import Path

from .data import read_dataset, split
from .evaluate import evaluate_records, log_evaluation, write_evaluation
from .package import log_model_artifact, package_checkpoint


def publish_run(best: Path, config: dict, summary: dict, run=None) -> dict:
    """Package ``best`` into ``<output_dir>/package``, evaluate it into ``<output_dir>/evaluation``;
    returns what it adds to the run's summary (the package folder, the mean evaluation)."""
    output = Path(config["output_dir"])
    folder = package_checkpoint(best, output / "package", overwrite=True,
                                metrics={"validation_mean_dice_model_grid": summary["best_mean_dice"]}, run=run)
    added = {"package": str(folder)}
    records = split(read_dataset(config["data"]["csv"]), config["data"]["fold"])[1]
    if records:
        evaluation = evaluate_records(folder, records, config["data"]["csv"], with_overlays=run is not None)
        write_evaluation(evaluation, output / "evaluation", overwrite=True)
        added["validation_evaluation"] = evaluation["mean"]
        if run is not None:
            log_evaluation(run, evaluation)
    if run is not None:
        log_model_artifact(run, folder)
        run.summary.update({k: v for k, v in {**summary, **added}.items() if isinstance(v, (int, float))})
    return added
