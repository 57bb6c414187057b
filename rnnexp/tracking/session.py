"""One training run as an MLflow run: open (or reopen) it, describe it, train, close it with its status.

`train(cfg)` is what `python -m rnnexp.run` and every sweep job call; it returns the best validation
loss, which Hydra's sweepers optimise.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import cast

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from rnnexp.config import RunConfig, resolve
from rnnexp.data import load_corpus
from rnnexp.errors import UserError
from rnnexp.tracking import pyfunc_model, trained
from rnnexp.tracking.describe import command_overrides, describe, readable_name
from rnnexp.tracking.logger import create_run, get_run, reopen_run, run_status
from rnnexp.tracking.store import connect, resolve_tracking_uri
from rnnexp.tracking.system_metrics import system_metrics
from rnnexp.training import checkpoint
from rnnexp.training.diagnostics import EvalHook
from rnnexp.training.loop import CHECKPOINT_ARTIFACTS, StopSignals, fit

log = logging.getLogger(__name__)


def train(
    cfg: DictConfig | RunConfig,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    eval_hooks: Sequence[EvalHook] = (),
    stop: StopSignals | None = None,
) -> float:
    """Train one run as `cfg` says (or continue the one `cfg.resume` names); return the best validation loss.

    A resumed run continues from its last checkpoint, or, killed before its first, starts again
    from step 0 in the same run; a run whose process still runs is refused (logger.reopen_run).
    `stop` is how a caller other than a signal asks training to stop after its current step.
    """
    run_cfg = cfg if isinstance(cfg, RunConfig) else resolve(cfg)
    run_cfg.train.checkpoint_dir = str(Path(run_cfg.train.checkpoint_dir).resolve())
    client = connect(resolve_tracking_uri(run_cfg.tracking_uri), writing=True)
    start = None
    if run_cfg.resume:
        run_id, start = find_checkpoint(run_cfg.resume, client, Path(run_cfg.train.checkpoint_dir))
        saved = resolve(start.meta["config"] if start else saved_config(client, run_id))
        saved.resume, saved.tracking_uri = run_cfg.resume, run_cfg.tracking_uri
        saved.train.checkpoint_dir = run_cfg.train.checkpoint_dir
        run_cfg = saved
        run = reopen_run(client, run_id)
        log.info("resuming run %s at step %d", run_id, start.meta["progress"]["step"] if start else 0)
    else:
        title = run_name or run_cfg.run_name or readable_name(command_overrides(), run_cfg)
        run = create_run(client, run_cfg.experiment_name, title, parent_run_id, tags or {})
    run.flush_every_s = run_cfg.train.flush_every_s
    blas = threadpool_limits(run_cfg.blas_threads, user_api="blas") if run_cfg.blas_threads else nullcontext()
    monitor = system_metrics(client.tracking_uri, run.run_id, resumed=bool(run_cfg.resume))
    with run_status(run), blas, stop or StopSignals() as stop, monitor:
        checkpoint_dir = Path(run_cfg.train.checkpoint_dir) / run.run_id
        checkpoint.check_writable(checkpoint_dir)
        corpus = load_corpus(run_cfg.dataset, seed=run_cfg.seed)
        if not run_cfg.resume or not described(client, run.run_id):
            describe(run, run_cfg, corpus)
        if start is not None:
            run.log_pending(start.meta["pending_metrics"])
            for name in ("last.npz", "best.npz"):  # the server may have missed them (it was away)
                if (checkpoint_dir / name).is_file():
                    run.log_artifact(checkpoint_dir / name, CHECKPOINT_ARTIFACTS)
        best = fit(run_cfg, corpus, run, checkpoint_dir, run.run_id, start, stop, eval_hooks)
        run.deferrable("model", lambda: pyfunc_model.log_model(client, run.run_id, checkpoint_dir / "best.npz", corpus))
        return best


def find_checkpoint(
    resume: str, client: MlflowClient, checkpoint_dir: Path
) -> tuple[str, checkpoint.Checkpoint | None]:
    """The run to resume and where it continues from: the checkpoint at a .npz path, or the run's last one
    (the local copy, else the run's artifact); None for a run killed before its first checkpoint."""
    start = checkpoint.load(Path(resume)) if resume.endswith(".npz") else None
    run_id = start.meta["run_id"] if start else resume
    run = get_run(client, run_id)
    if run.info.status == "FINISHED":
        raise UserError(f"run {run_id} has finished: there is nothing to resume; start a new run instead.")
    if run.data.tags.get("sweep") == "true":
        raise UserError(
            f"run {run_id} is a sweep's parent run: finish the sweep from the command line with "
            f"python -m rnnexp.run resume={run_id}."
        )
    if start is None and has_checkpoint(client, run_id, checkpoint_dir):
        start = checkpoint.load(trained.local_checkpoint(client, run_id, "last.npz", checkpoint_dir))
    return run_id, start


def has_checkpoint(client: MlflowClient, run_id: str, checkpoint_dir: Path) -> bool:
    if (checkpoint_dir / run_id / "last.npz").is_file():
        return True
    return any(a.path.endswith("/last.npz") for a in client.list_artifacts(run_id, CHECKPOINT_ARTIFACTS))


def saved_config(client: MlflowClient, run_id: str) -> dict:
    """The config a run logged when it started: what a run killed before its first checkpoint restarts with."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, trained.CONFIG_ARTIFACT, tmp)
        except (MlflowException, OSError):
            raise UserError(
                f"run {run_id} stopped before it logged its config, so it cannot be resumed: start a new run instead."
            ) from None
        return cast(dict, OmegaConf.to_container(OmegaConf.load(path)))


def described(client: MlflowClient, run_id: str) -> bool:
    """Whether the run got its whole description (the vocabulary is logged last)."""
    return any(a.path == trained.VOCAB_ARTIFACT for a in client.list_artifacts(run_id))
