"""One training run as an MLflow run: open (or reopen) it, describe it, train, close it with its status.

`train(cfg)` is what `python -m rnnexp.run` and every sweep job call; it returns the best validation
loss, which Hydra's sweepers optimise.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import IO, cast

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf
from threadpoolctl import threadpool_limits

from rnnexp.config import RunConfig, as_tree, resolve
from rnnexp.config.resolve import check_memory
from rnnexp.data import Corpus, load_corpus
from rnnexp.engine import build_model
from rnnexp.errors import UserError
from rnnexp.tracking import pyfunc_model, trained
from rnnexp.tracking.describe import command_overrides, describe, single_run_name
from rnnexp.tracking.lifecycle import create_run, get_run, reopen_run, run_status
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
    client: MlflowClient | None = None,
) -> float:
    """Train one run as `cfg` says (or continue the one `cfg.resume` names); return the best validation loss.

    A resumed run continues from its last checkpoint, or, killed before its first, starts again
    from step 0 in the same run; a run whose process still runs is refused (lifecycle.reopen_run).
    `stop` is how a caller other than a signal asks training to stop after its current step;
    `client`, a caller's connection to the run's store (connected here when None).
    """
    run_cfg = cfg if isinstance(cfg, RunConfig) else resolve(cfg)
    run_cfg.train.checkpoint_dir = str(Path(run_cfg.train.checkpoint_dir).resolve())
    client = client or connect(resolve_tracking_uri(run_cfg.tracking_uri), writing=True)
    start, claimed = None, None
    if run_cfg.resume:
        run_id, start, start_path = find_checkpoint(run_cfg.resume, client, Path(run_cfg.train.checkpoint_dir))
        claimed = claim_run(client.tracking_uri, run_id)  # held until training ends (closed by the with below)
        try:
            run_cfg = resumed_config(client, run_cfg, run_id, start, start_path)
            run = reopen_run(client, run_id)
        except BaseException:
            claimed.close()  # refused: nothing was written, and another resume may try at once
            raise
        log.info("resuming run %s at step %d", run_id, start.meta["progress"]["step"] if start else 0)
    else:
        title = run_name or run_cfg.run_name or single_run_name(command_overrides(), run_cfg, time.time())
        run = create_run(client, run_cfg.experiment_name, title, parent_run_id, tags or {})
    run.flush_every_s = run_cfg.train.flush_every_s
    blas = threadpool_limits(run_cfg.blas_threads, user_api="blas") if run_cfg.blas_threads else nullcontext()
    monitor = system_metrics(client.tracking_uri, run.run_id, bool(run_cfg.resume), lambda: run.server_away)
    with claimed or nullcontext(), run_status(run), blas, stop or StopSignals() as stop, monitor:
        checkpoint_dir = Path(run_cfg.train.checkpoint_dir) / run.run_id
        checkpoint.check_writable(checkpoint_dir)
        corpus = read_corpus(run_cfg)
        check_memory(run_cfg, len(corpus.vocab))
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


def resumed_config(
    client: MlflowClient, run_cfg: RunConfig, run_id: str, start: checkpoint.Checkpoint | None, path: Path | None
) -> RunConfig:
    """The config the run logged (a checkpoint's, for a run that logged none), once its checkpoints are
    verified to be its own; nothing is written here, so a refusal leaves the run as it was."""
    logged = logged_config(client, run_id)
    if start is None:
        if logged is None:
            raise UserError(
                f"run {run_id} stopped before it logged its config, so it cannot be resumed: start a new run instead."
            )
        saved = resolve(logged)
    else:
        saved = resolve(logged if logged is not None else start.meta["config"])
        owner = run_owner(client, run_id, saved, start, config_logged=logged is not None)
        verify_checkpoints(owner, start, cast(Path, path), Path(run_cfg.train.checkpoint_dir) / run_id)
    saved.resume, saved.tracking_uri = run_cfg.resume, run_cfg.tracking_uri
    saved.train.checkpoint_dir = run_cfg.train.checkpoint_dir
    return saved


def read_corpus(run_cfg: RunConfig) -> Corpus:
    """The run's data; a file the data loader cannot open is one sentence naming it (and the run FAILED)."""
    try:
        return load_corpus(run_cfg.dataset, seed=run_cfg.seed)
    except OSError as err:
        raise UserError(
            f"cannot read {err.filename or 'the dataset'} ({err.strerror or err}): make it readable, or point "
            "dataset.path (or dataset.data_dir) at a readable copy."
        ) from None


def claim_run(tracking_uri: str, run_id: str) -> IO[str]:
    """An exclusive lock on resuming `run_id`, for as long as the returned file stays open: of two resumes
    of one run started at once on this machine, the second is refused here, before either writes."""
    key = hashlib.sha256(f"{tracking_uri} {run_id}".encode()).hexdigest()[:20]
    handle = open(Path(tempfile.gettempdir()) / f"rnnexp-resume-{key}.lock", "a")  # noqa: SIM115 - returned open
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UserError(
            f"run {run_id} is being resumed by another process on this machine: let that one continue it "
            "(resume it again only if that one stops before it finishes)."
        ) from None
    return handle


def find_checkpoint(
    resume: str, client: MlflowClient, checkpoint_dir: Path
) -> tuple[str, checkpoint.Checkpoint | None, Path | None]:
    """The run to resume and where it continues from: the checkpoint at a .npz path, or the run's last one
    (the local copy, else the run's artifact), and its path; None for a run killed before its first."""
    path = Path(resume) if resume.endswith(".npz") else None
    start = checkpoint.load(path) if path else None
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
        path = trained.local_checkpoint(client, run_id, "last.npz", checkpoint_dir)
        start = checkpoint.load(path)
    if start is None:
        log.warning(
            "run %s has no checkpoint, neither in %s nor in MLflow: it restarts from step 0 with its logged config",
            run_id,
            checkpoint_dir / run_id,
        )
    return run_id, start, path


def has_checkpoint(client: MlflowClient, run_id: str, checkpoint_dir: Path) -> bool:
    if (checkpoint_dir / run_id / "last.npz").is_file():
        return True
    return any(a.path.endswith("/last.npz") for a in client.list_artifacts(run_id, CHECKPOINT_ARTIFACTS))


def logged_config(client: MlflowClient, run_id: str) -> dict | None:
    """The config a run logged when it started, or None for a run killed before it logged it."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, trained.CONFIG_ARTIFACT, tmp)
        except (MlflowException, OSError):
            return None
        return cast(dict, OmegaConf.to_container(OmegaConf.load(path)))


def run_owner(
    client: MlflowClient, run_id: str, cfg: RunConfig, start: checkpoint.Checkpoint, config_logged: bool
) -> checkpoint.Owner:
    """What the run says its checkpoints hold: its config (bound by digest where the run logged it), its
    data's digest, the shapes of its model."""
    run = get_run(client, run_id)
    vocab_size = run.data.params.get("vocab_size_actual")
    shapes = None
    if vocab_size is not None:  # the shapes the run's own config gives over its own vocabulary
        model = build_model(cfg.model, int(vocab_size), cfg.seed, word_class=start.arrays.get("word_class"))
        shapes = checkpoint.shapes(model.params)
    config_digest = checkpoint.config_digest(as_tree(cfg)) if config_logged else None
    return checkpoint.Owner(run_id, config_digest, run.data.tags.get("dataset_digest"), shapes)


def verify_checkpoints(owner: checkpoint.Owner, start: checkpoint.Checkpoint, path: Path, run_dir: Path) -> None:
    """Refuse the checkpoint to continue from, and the local best one, unless both are the run's own."""
    checkpoint.verify_owner(path, start, owner)
    best = run_dir / "best.npz"
    if best.is_file():
        checkpoint.verify_owner(best, checkpoint.load(best), owner)


def described(client: MlflowClient, run_id: str) -> bool:
    """Whether the run got its whole description (the vocabulary is logged last)."""
    return any(a.path == trained.VOCAB_ARTIFACT for a in client.list_artifacts(run_id))
