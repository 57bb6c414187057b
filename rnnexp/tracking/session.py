"""One training run as an MLflow run: open (or reopen) it, describe it, train, close it with its status.

`train(cfg)` is what `python -m rnnexp.run` and every sweep job call; it returns the best validation
loss, which Hydra's sweepers optimise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path

from mlflow import MlflowClient
from omegaconf import DictConfig
from threadpoolctl import threadpool_limits

from rnnexp.config import RunConfig, resolve
from rnnexp.data import load_corpus
from rnnexp.errors import UserError
from rnnexp.training import checkpoint
from rnnexp.training.diagnostics import EvalHook
from rnnexp.training.loop import StopSignals, fit
from rnnexp.tracking import trained
from rnnexp.tracking.describe import describe
from rnnexp.tracking.logger import create_run, get_run, reopen_run, run_status
from rnnexp.tracking.store import connect, resolve_tracking_uri

log = logging.getLogger(__name__)


def train(cfg: DictConfig | RunConfig, parent_run_id: str | None = None, run_name: str | None = None,
          tags: Mapping[str, str] | None = None, eval_hooks: Sequence[EvalHook] = ()) -> float:
    """Train one run as `cfg` says (or continue the one `cfg.resume` names); return the best validation loss."""
    run_cfg = cfg if isinstance(cfg, RunConfig) else resolve(cfg)
    run_cfg.train.checkpoint_dir = str(Path(run_cfg.train.checkpoint_dir).resolve())
    client = connect(resolve_tracking_uri(run_cfg.tracking_uri))
    start = None
    if run_cfg.resume:
        start = find_checkpoint(run_cfg.resume, client, Path(run_cfg.train.checkpoint_dir))
        saved = resolve(start.meta["config"])
        saved.resume, saved.tracking_uri = run_cfg.resume, run_cfg.tracking_uri
        saved.train.checkpoint_dir = run_cfg.train.checkpoint_dir
        run_cfg = saved
        run = reopen_run(client, start.meta["run_id"])
        log.info("resuming run %s at step %d", run.run_id, start.meta["progress"]["step"])
    else:
        run = create_run(client, run_cfg.experiment_name, run_name or run_cfg.run_name, parent_run_id, tags or {})
    run.flush_every_s = run_cfg.train.flush_every_s
    blas = threadpool_limits(run_cfg.blas_threads, user_api="blas") if run_cfg.blas_threads else nullcontext()
    with run_status(run), blas, StopSignals() as stop:
        corpus = load_corpus(run_cfg.dataset, seed=run_cfg.seed)
        if start is None:
            describe(run, run_cfg, corpus)
        else:
            run.log_pending(start.meta["pending_metrics"])
        checkpoint_dir = Path(run_cfg.train.checkpoint_dir) / run.run_id
        return fit(run_cfg, corpus, run, checkpoint_dir, run.run_id, start, stop, eval_hooks)


def find_checkpoint(resume: str, client: MlflowClient, checkpoint_dir: Path) -> checkpoint.Checkpoint:
    """The checkpoint at a .npz path, or a run id's last one (the local copy, else the run's artifact)."""
    start = checkpoint.load(Path(resume)) if resume.endswith(".npz") else None
    run_id = start.meta["run_id"] if start else resume
    if get_run(client, run_id).info.status == "FINISHED":
        raise UserError(f"run {run_id} has finished: there is nothing to resume; start a new run instead.")
    return start or checkpoint.load(trained.local_checkpoint(client, run_id, "last.npz", checkpoint_dir))
