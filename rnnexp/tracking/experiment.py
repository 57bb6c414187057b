"""The MLflow experiment runs land in: created on first use, marked as model training, described."""

from __future__ import annotations

import re

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

from rnnexp.errors import UserError
from rnnexp.tracking.store import sqlite_path

# The UI opens an experiment of this kind on its runs, not on MLflow 3's GenAI overview.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
EXPERIMENT_DESCRIPTION = """\
Recurrent language models trained with rnnexp (`python -m rnnexp.run`): NumPy RNNs composed with Hydra.

- **A run** is one training run, named after the settings it changed. Params: the resolved config, each knob once
  (`model.hidden_dim`, `optim.lr`, ...). Charts: `train_loss`, `val_ppl`, `best_val_ppl`, `test_ppl`, `lr`,
  `tokens_per_sec`; the gradient diagnostics under `diagnostics/`, CPU and memory under `system/`. Artifacts:
  checkpoints, `curves.png`, samples, and the best checkpoint as an MLflow model (`runs:/<run id>/model`).
- **A sweep** (`-m`) is a parent run with a child per job: its description compares the children, best first.
"""


def experiment_id(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if new, marked as model training and described.

    A sqlite store keeps artifacts in mlartifacts/ beside it.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        db = sqlite_path(client.tracking_uri)
        location = None
        if db is not None:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
            location = (db.parent / "mlartifacts" / slug).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location, tags=experiment_tags({}))
        except MlflowException:  # another process created it meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise UserError(
            f"the MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore) "
            "or choose another experiment_name."
        )
    for key, value in experiment_tags(experiment.tags).items():
        try:
            client.set_experiment_tag(experiment.experiment_id, key, value)
        except MlflowException:  # another process set it at the same moment
            pass
    return experiment.experiment_id


def experiment_tags(existing: dict[str, str]) -> dict[str, str]:
    """The tags an experiment still lacks: its kind (unless set on purpose; the UI's guesses end in
    `_inferred`) and a description (unless it has one)."""
    key, kind = EXPERIMENT_KIND
    tags = {}
    if existing.get(key, "").endswith(("_inferred", "no_inferred_type")) or key not in existing:
        tags[key] = kind
    if MLFLOW_RUN_NOTE not in existing:
        tags[MLFLOW_RUN_NOTE] = EXPERIMENT_DESCRIPTION
    return tags
