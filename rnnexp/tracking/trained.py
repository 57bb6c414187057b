"""A trained model back from an MLflow run: its config, vocabulary and a checkpoint's parameters."""

from __future__ import annotations

import logging
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
from rnnexp.tracking.lifecycle import get_run
from rnnexp.training import checkpoint
from rnnexp.training.loop import CHECKPOINT_ARTIFACTS

log = logging.getLogger(__name__)
VOCAB_ARTIFACT = "vocab.json"
CONFIG_ARTIFACT = "config.yaml"


def local_checkpoint(client: MlflowClient, run_id: str, name: str, checkpoint_dir: Path) -> Path:
    """`checkpoint_dir/<run_id>/<name>`, downloaded from the run's artifacts when not on this machine, or
    fetched again when the local copy is unreadable (a cache that heals, not one that fails forever)."""
    local = checkpoint_dir / run_id / name
    if local.is_file():
        try:
            checkpoint.load(local)
            return local
        except UserError:
            log.warning("the local checkpoint %s is unreadable: fetching it again from run %s", local, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            downloaded = Path(client.download_artifacts(run_id, f"{CHECKPOINT_ARTIFACTS}/{name}", tmp))
        except MlflowException:
            raise UserError(
                f"run {run_id} has no checkpoint {name}, neither in {local.parent} nor in MLflow: "
                "it stopped before its first checkpoint."
            ) from None
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(downloaded, local)
        except OSError as err:
            raise UserError(
                f"cannot copy run {run_id}'s checkpoint into {local.parent} ({err.strerror or err}): set "
                "checkpoint_dir= to a writable folder."
            ) from None
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
        vocab = Path(client.download_artifacts(run_id, VOCAB_ARTIFACT, tmp))
        return from_files(saved, vocab, f"run {run_id}'s {VOCAB_ARTIFACT} artifact")


def from_files(checkpoint_path: Path, vocab_path: Path, vocab_name: str | None = None) -> TrainedModel:
    """The model a checkpoint holds (its config is in it), with its vocabulary: what a logged model loads.

    `vocab_name` is what messages call the vocabulary where its path is a temporary download."""
    saved = checkpoint.load(checkpoint_path)
    run_cfg = resolve(saved.meta["config"])
    vocab = load_vocabulary(vocab_path, vocab_name)
    model = build_model(run_cfg.model, len(vocab), run_cfg.seed, word_class=saved.arrays.get("word_class"))
    over_vocab = f"a model over its {len(vocab)} words"
    mismatch = checkpoint.shape_mismatch(checkpoint.shapes(saved.params), checkpoint.shapes(model.params), over_vocab)
    if mismatch:
        raise UserError(
            f"{vocab_name or vocab_path} does not fit the checkpoint {checkpoint_path} ({mismatch}): it is not "
            "the vocabulary the run trained with; log that one again, or use another run."
        )
    load_params(model, saved.params)
    return TrainedModel(model, vocab, run_cfg)


def load_vocabulary(path: Path, name: str | None = None) -> Vocabulary:
    try:
        return Vocabulary.load(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        detail = f"missing key {err}" if isinstance(err, KeyError) else str(err).splitlines()[0]
        raise UserError(
            f"{name or path} is not a readable rnnexp vocabulary ({detail}): it is damaged; log the run's "
            "vocabulary again, or use another run."
        ) from None


def sweep_parent_message(client: MlflowClient, parent: Run) -> str:
    """What to use instead of a sweep's parent run, which trains nothing: its best child, or any child."""
    children = comparison.children(client, parent)
    best = comparison.best(children)
    where = f"run {parent.info.run_id} is the parent run of a sweep ({parent.info.run_name}), which holds no model"
    if best is not None:
        return f"{where}: use its best child, run_id={best.info.run_id} ({best.info.run_name})."
    return f"{where}, and none of its {len(children)} children has finished: use the run id of one of them."
