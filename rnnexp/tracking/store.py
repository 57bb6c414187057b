"""Which MLflow store runs go to, and a client of it that works (`connect`).

A sqlite path is made absolute, so that every job of a sweep, wherever it runs, writes to the same
file; an http:// server is asked for its health before any work starts.

MLflow creates and upgrades a database's tables on first use, in several steps that are not one
transaction on sqlite: two processes doing it at once crash, or leave the store half-migrated. So
the first call that may create or upgrade tables runs under a lock that every process takes: an
flock on `<db>.lock` beside a sqlite file, a PostgreSQL advisory lock on a PostgreSQL store.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import re
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import sqlalchemy
from mlflow import MlflowClient

from rnnexp.errors import UserError

log = logging.getLogger(__name__)
DEFAULT_DB = "mlflow.db"
# How long one HTTP request to a tracking server may take, and how often it is retried: MLflow's
# defaults (120 s, 7 retries with exponential backoff) block training for about 12 minutes when a
# server dies. A dead server refuses at once, so a request fails in about 2 s; a busy one gets 20 s.
# A logger that loses its server keeps metrics and asks /health (HEALTH_TIMEOUT_S) before trying
# again (logger.py). Each can be set in the environment.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.2",
}
HEALTH_TIMEOUT_S = 1.0
POSTGRES_CONNECT_TIMEOUT_S = 5
# How long a run waits for a sqlite store that another process holds locked before it gives up.
STORE_LOCK_WAIT_S = 30.0
_PG_LOCK_KEY = 0x726E6E657870  # "rnnexp": one advisory lock for table creation and upgrades


def resolve_tracking_uri(configured: str | None) -> str:
    """The store to log to: `configured`, else $MLFLOW_TRACKING_URI, else ./mlflow.db (absolute).

    A relative sqlite path is made absolute against the working directory, so that every job of
    a sweep, wherever it runs, writes to the same file.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB}"
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    if scheme in ("", "file"):
        raise UserError(
            f"tracking_uri {uri!r} is an MLflow file store, which this MLflow no longer supports: "
            f"use sqlite:///{DEFAULT_DB} or an http:// tracking server."
        )
    if scheme == "sqlite":
        db = Path(uri[len("sqlite:///") :])
        uri = f"sqlite:///{(Path.cwd() / db).resolve()}"
    if scheme == "postgresql" and importlib.util.find_spec("psycopg2") is None:
        uri = "postgresql+psycopg://" + uri.split("://", 1)[1]  # SQLAlchemy's default driver is psycopg2
    return uri


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def check_reachable(uri: str) -> None:
    """Fail now, in one sentence, if the store cannot be reached, rather than after hours of training."""
    db = sqlite_path(uri)
    if db is not None and db.is_dir():  # MLflow would retry for minutes, then blame the folder's contents
        raise UserError(
            f"tracking_uri {uri} names the folder {db}, not a database file: use sqlite:///{db / DEFAULT_DB}."
        )
    if db is not None and not db.parent.is_dir():
        raise UserError(
            f"the MLflow store's folder {db.parent} does not exist: create it or choose another tracking_uri."
        )
    if is_postgres(uri):
        check_postgres(uri)
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as response:
                response.read()
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise UserError(
                f"cannot reach the MLflow tracking server at {uri} ({reason}): start it (mlflow server) "
                "or set tracking_uri / MLFLOW_TRACKING_URI to a reachable store."
            ) from None


def answers(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """Whether a tracking server answers its health check now."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            response.read()
    except (urllib.error.URLError, OSError):
        return False
    return True


def server_unreachable(err: BaseException) -> bool:
    """Whether an MLflow error means the tracking server did not answer (not that it refused the request)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# What a store's own error says when the store, not the run, is at fault, and that cause in words.
STORE_FAULTS = {
    "database is locked": "another process held it locked",
    "readonly database": "it became read-only",
    "database or disk is full": "its disk is full",
    "disk I/O error": "its disk failed to write",
    "unable to open database file": "its file could not be opened",
}


def store_fault(err: BaseException) -> str | None:
    """The cause in words when `err` (or what caused it) is the store failing under a run, else None."""
    seen: BaseException | None = err
    while seen is not None:
        for needle, cause in STORE_FAULTS.items():
            if needle in str(seen):
                return cause
        seen = seen.__cause__ or seen.__context__
    return None


def is_postgres(uri: str) -> bool:
    return uri.split("://", 1)[0].split("+", 1)[0] == "postgresql"


def check_postgres(uri: str) -> None:
    """One sentence, within seconds, for a PostgreSQL store that cannot be used (MLflow retries for minutes)."""
    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S})
    except ModuleNotFoundError as err:
        raise UserError(
            f"tracking_uri {redacted(uri)} needs the PostgreSQL driver {err.name}: install it with "
            "pip install -e '.[postgres]'."
        ) from None
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as err:
        reason = str(getattr(err, "orig", err)).strip().splitlines()[0]
        raise UserError(
            f"cannot reach the PostgreSQL store {redacted(uri)} ({reason}): start it (make server) "
            "or set tracking_uri / MLFLOW_TRACKING_URI to a reachable store."
        ) from None
    finally:
        engine.dispose()


def redacted(uri: str) -> str:
    """The URI without its password, for messages."""
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", uri)


def connect(uri: str, writing: bool = False) -> MlflowClient:
    """A client of a reachable store whose tables exist at MLflow's current schema.

    The first call creates or upgrades the tables; it runs under the store's lock, so that any
    number of processes may start on a new store at once. A sqlite store in a read-only folder
    can be read (generate, evaluate), not written (`writing`: a run or a sweep).
    """
    check_reachable(uri)
    # MLflow logs each database error with its whole traceback before raising it again: the error it
    # raises is the one reported (as a sentence for a store fault), once.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    db = sqlite_path(uri)
    if db is not None and not os.access(db.parent, os.W_OK):
        if writing or not db.is_file():
            raise UserError(
                f"the MLflow store's folder {db.parent} is not writable (sqlite writes a journal beside "
                f"{db.name}): make it writable or choose another tracking_uri."
            )
        return MlflowClient(tracking_uri=uri)  # an existing store, only read: no tables to create, no lock
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    with store_lock(uri):
        if db is not None and writing and db.is_file():  # under the lock: not another process's table creation
            check_sqlite_writable(db)
        try:
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)  # creates or upgrades the tables
        except Exception as err:  # alembic's and SQLAlchemy's errors too: the store cannot be opened
            if uri.startswith(("http://", "https://")):
                if server_unreachable(err):
                    raise UserError(
                        f"the MLflow tracking server at {uri} does not answer in time: check that it "
                        "runs and is not overloaded, or set MLFLOW_HTTP_REQUEST_TIMEOUT higher."
                    ) from None
                raise
            raise UserError(diagnose(uri, err)) from None
    return client


def check_sqlite_writable(db: Path) -> None:
    """One sentence now for a store file that cannot be written, and for one that another process keeps
    locked past STORE_LOCK_WAIT_S (said when the wait starts): MLflow would fail later, in pages of SQL.
    Any other fault of the file is MLflow's to find and `diagnose`'s to explain."""
    reason = write_blocked(db, timeout=1.0)
    if reason is not None and "locked" in reason:
        log.warning("the MLflow store %s is locked by another process: waiting up to %.0f s", db, STORE_LOCK_WAIT_S)
        reason = write_blocked(db, timeout=STORE_LOCK_WAIT_S)
        if reason is not None and "locked" in reason:
            raise UserError(
                f"the MLflow store {db} stayed locked by another process for {STORE_LOCK_WAIT_S:.0f} s: end what "
                "holds it (an open sqlite3 shell or database browser, a stuck run), or choose another tracking_uri."
            )
    if not os.access(db, os.W_OK) or (reason is not None and "readonly" in reason):
        raise UserError(
            f"the MLflow store {db} is read-only: make it writable (chmod u+w), or choose another tracking_uri."
        )


def write_blocked(db: Path, timeout: float) -> str | None:
    """Why a write transaction cannot start on `db` within `timeout` seconds, or None when it can (none is made)."""
    try:
        connection = sqlite3.connect(db, timeout=timeout, isolation_level=None)
    except sqlite3.Error as err:
        return str(err)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    except sqlite3.Error as err:
        return str(err)
    finally:
        connection.close()
    return None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Held while a process may create or upgrade the store's tables; a no-op for a tracking server,
    which does that itself at start."""
    db = sqlite_path(uri)
    if db is not None:
        lock_file = db.with_name(db.name + ".lock")
        try:
            handle = open(lock_file, "a")
        except OSError as err:
            raise UserError(
                f"cannot create the MLflow store's lock file {lock_file} ({err.strerror}): make "
                f"{db.parent} writable or choose another tracking_uri."
            ) from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
    elif is_postgres(uri):
        engine = sqlalchemy.create_engine(
            uri, connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}, poolclass=sqlalchemy.pool.NullPool
        )
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"SELECT pg_advisory_lock({_PG_LOCK_KEY})"))
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text(f"SELECT pg_advisory_unlock({_PG_LOCK_KEY})"))
        engine.dispose()
    else:
        yield


def leftover_migration_tables(uri: str) -> list[str]:
    """Tables an interrupted alembic batch migration leaves behind (`_alembic_tmp_<table>`)."""
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        return sorted(t for t in sqlalchemy.inspect(engine).get_table_names() if t.startswith("_alembic_tmp_"))
    finally:
        engine.dispose()


def diagnose(uri: str, err: BaseException) -> str:
    """One sentence on a store MLflow cannot open, with the command that repairs it."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "unsupported URI" in text or "Unexpected URI scheme" in text:  # nothing there to repair
        return (
            f"tracking_uri {redacted(uri)} has a scheme MLflow does not know: use sqlite:///{DEFAULT_DB}, an "
            "http:// tracking server or a postgresql:// database."
        )
    repair = f"python -m rnnexp.repair action=repair_store tracking_uri={uri}"
    db = sqlite_path(uri)
    if db is not None:
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                conn.execute("SELECT name FROM sqlite_master").fetchall()
        except sqlite3.DatabaseError as bad:
            return (
                f"{db} is not a readable sqlite database ({bad}): restore it from a backup, or move it aside "
                "and let a new run create a new store."
            )
    try:
        leftovers = leftover_migration_tables(uri)
    except sqlalchemy.exc.SQLAlchemyError:
        leftovers = []
    if leftovers:
        return (
            f"the MLflow store {redacted(uri)} was left half-migrated by an interrupted schema upgrade (tables "
            f"{', '.join(leftovers)}): back it up, then repair it with {repair}."
        )
    if "out-of-date database schema" in text:
        return (
            f"the MLflow store {redacted(uri)} has an older schema than this MLflow: back it up, then upgrade "
            f"it with {repair}."
        )
    return f"cannot open the MLflow store {redacted(uri)} ({text[:300]}): back it up, then try {repair}."


def repair_store(uri: str) -> list[str]:
    """Finish an interrupted schema upgrade; return what was done, one line per change.

    An alembic batch migration on sqlite copies a table into `_alembic_tmp_<table>`, drops the
    original and renames the copy. A leftover copy beside its original is dropped; a copy whose
    original is gone becomes the table again. A store whose tables and columns are already those
    of this MLflow but whose recorded version lags (two upgrades at once) gets the current version
    recorded; any other store gets MLflow's own upgrade.
    """
    from alembic import command
    from mlflow.store.db.utils import (
        Base,
        _get_alembic_config,
        _get_latest_schema_revision,
        _get_schema_version,
        _initialize_tables,
    )

    done = []
    with store_lock(uri):
        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
        try:
            tables = set(sqlalchemy.inspect(engine).get_table_names())
            with engine.begin() as connection:
                for leftover in sorted(t for t in tables if t.startswith("_alembic_tmp_")):
                    original = leftover[len("_alembic_tmp_") :]
                    if original in tables:
                        connection.execute(sqlalchemy.text(f'DROP TABLE "{leftover}"'))
                        done.append(f"dropped {leftover} (a leftover copy of {original})")
                    else:
                        connection.execute(sqlalchemy.text(f'ALTER TABLE "{leftover}" RENAME TO "{original}"'))
                        done.append(f"renamed {leftover} back to {original}")
            before, head = _get_schema_version(engine), _get_latest_schema_revision()
            if before != head:
                inspector = sqlalchemy.inspect(engine)
                present = set(inspector.get_table_names())
                current = all(
                    name in present
                    and {c.name for c in table.columns} <= {c["name"] for c in inspector.get_columns(name)}
                    for name, table in Base.metadata.tables.items()
                )
                if current:
                    command.stamp(_get_alembic_config(str(engine.url.render_as_string(hide_password=False))), head)
                    done.append(f"recorded schema version {head} (was {before}): the tables were upgraded already")
                else:
                    _initialize_tables(engine)  # what MLflow runs on first use: missing tables, then the upgrade
                    done.append(f"upgraded the schema from {before} to {_get_schema_version(engine)}")
        except Exception as err:  # noqa: BLE001 - alembic's and the driver's errors: one sentence
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"the repair of {redacted(uri)} stopped ({first[:300]}): restore the store from its backup."
            ) from None
        finally:
            engine.dispose()
    return done
