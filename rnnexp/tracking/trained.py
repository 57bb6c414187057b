"""A trained model back from an MLflow run: its config, vocabulary and a checkpoint's parameters."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from rnnexp.config import RunConfig, resolve
from rnnexp.data.vocab import Vocabulary
from rnnexp.engine import build_model, load_params
from rnnexp.errors import UserError
from rnnexp.tracking import comparison
from rnnexp.tracking.logger import get_run
from rnnexp.training import checkpoint
from rnnexp.training.loop import CHECKPOINT_ARTIFACTS

VOCAB_ARTIFACT = "vocab.json"
CONFIG_ARTIFACT = "config.yaml"


def local_checkpoint(client: MlflowClient, run_id: str, name: str, checkpoint_dir: Path) -> Path:
    """`checkpoint_dir/<run_id>/<name>`, downloaded from the run's artifacts when not on this machine."""
    local = checkpoint_dir / run_id / name
    if not local.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            try:
                downloaded = Path(client.download_artifacts(run_id, f"{CHECKPOINT_ARTIFACTS}/{name}", tmp))
            except MlflowException:
                raise UserError(
                    f"run {run_id} has no checkpoint {name}, neither in {local.parent} nor in MLflow: "
                    "it stopped before its first checkpoint."
                ) from None
            local.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(downloaded, local)
    return local


@dataclass
class TrainedModel:
    model: Any
    vocab: Vocabulary
    config: RunConfig


def load(client: MlflowClient, run_id: str, which: str, checkpoint_dir: Path) -> TrainedModel:
    """The run's model with the parameters of its `which` checkpoint (best or last)."""
    if which not in ("best", "last"):
        raise UserError(f"checkpoint must be best or last, got {which!r}.")
    run = get_run(client, run_id)
    if comparison.is_sweep_parent(run):
        raise UserError(sweep_parent_message(client, run))
    saved = local_checkpoint(client, run_id, f"{which}.npz", checkpoint_dir)
    with tempfile.TemporaryDirectory() as tmp:
        return from_files(saved, Path(client.download_artifacts(run_id, VOCAB_ARTIFACT, tmp)))


def from_files(checkpoint_path: Path, vocab_path: Path) -> TrainedModel:
    """The model a checkpoint holds (its config is in it), with its vocabulary: what a logged model loads."""
    saved = checkpoint.load(checkpoint_path)
    run_cfg = resolve(saved.meta["config"])
    vocab = Vocabulary.load(vocab_path)
    model = build_model(run_cfg.model, len(vocab), run_cfg.seed, word_class=saved.arrays.get("word_class"))
    load_params(model, saved.params)
    return TrainedModel(model, vocab, run_cfg)


def sweep_parent_message(client: MlflowClient, parent: Run) -> str:
    """What to use instead of a sweep's parent run, which trains nothing: its best child, or any child."""
    children = comparison.children(client, parent)
    best = comparison.best(children)
    where = f"run {parent.info.run_id} is the parent run of a sweep ({parent.info.run_name}), which holds no model"
    if best is not None:
        return f"{where}: use its best child, run_id={best.info.run_id} ({best.info.run_name})."
    return f"{where}, and none of its {len(children)} children has finished: use the run id of one of them."
