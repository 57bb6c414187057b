"""Finding a dataset's source file (path, data_dir, download) and reading it as checked UTF-8."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hydra.utils import to_absolute_path

from rnnexp.config.dataset import DatasetConfig
from rnnexp.data import download
from rnnexp.data.download import PTB, PTB_WHERE, REDDIT, RemoteFile
from rnnexp.errors import UserError

DATA_DIR_ENV = "RNNEXP_DATA_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def default_data_dir(configured: str | None = None) -> Path:
    """`dataset.data_dir`, else $RNNEXP_DATA_DIR, else `data/` in the project root."""
    chosen = configured or os.environ.get(DATA_DIR_ENV)
    if chosen:
        return Path(to_absolute_path(os.path.expanduser(chosen)))
    return PROJECT_ROOT / "data"


def configured_path(cfg: DatasetConfig) -> Path | None:
    """`dataset.path` as an absolute path (relative to where the command was started)."""
    if cfg.path is None:
        return None
    return Path(to_absolute_path(os.path.expanduser(cfg.path)))


def locate(cfg: DatasetConfig, remote: RemoteFile, explicit: Path | None = None) -> Path:
    """The file to read: `explicit`, else under the data dir, downloading it if it can be."""
    if explicit is not None:
        return require_file(explicit, cfg, f"fix the path, or get {remote.filename} from {remote.where}")
    candidate = default_data_dir(cfg.data_dir) / remote.filename
    if candidate.is_file():
        return candidate
    if remote.url is not None and cfg.download:
        return download.fetch(remote, candidate)
    raise UserError(
        f"{remote.filename} is not at {candidate}; get it from {remote.where} and put it there "
        f"(or set dataset.path or {DATA_DIR_ENV})."
    )


def require_file(path: Path, cfg: DatasetConfig, advice: str) -> Path:
    """`path` if it is a file; else a UserError that says what it is instead, then `advice`."""
    if path.is_file():
        return path
    problem = (
        "is a directory, not a file"
        if path.is_dir()
        else "is not a regular file (a device, a pipe or a socket)"
        if path.exists()
        else "does not exist"
    )
    raise UserError(f"{path} {problem} (dataset.path={cfg.path}); {advice}.")


def read_utf8(path: Path) -> str:
    """The file's text; an empty file or bytes that are not UTF-8 are a UserError saying where."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"Cannot read {path} ({error.strerror}); check the path and permissions.") from None
    if not data.strip():
        raise UserError(f"{path} is empty; point the dataset at a file with text in it.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise UserError(
            f"{path} is not UTF-8: byte 0x{data[error.start]:02x} at line {line}, column {column} "
            f"(byte offset {error.start}); convert the file to UTF-8 (e.g. with iconv)."
        ) from None


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download_all() -> None:
    """Download what can be downloaded into the data directory; explain the rest."""
    data_dir = default_data_dir()
    target = data_dir / REDDIT.filename
    if target.exists():
        print(f"{target} already exists.")
    else:
        download.fetch(REDDIT, target)
        print(f"Downloaded {target} (git blob {REDDIT.git_blob}, verified).")
    missing = [remote.filename for remote in PTB.values() if not (data_dir / remote.filename).exists()]
    if missing:
        print(f"Penn Treebank: put {', '.join(missing)} into {data_dir}; they are {PTB_WHERE}.")
