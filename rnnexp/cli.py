"""The entry points' promise: a mistake the user can fix is one line on stderr and exit status 2.

Two places catch them. Inside the task function, `reports_user_errors` exits before Hydra can
add its own "Error executing job" line. Around `hydra.main`, `guard` catches what goes wrong
before or after the task (a bad override, a sweep callback): Hydra prints its own multi-line
report for those and exits 1, unless HYDRA_FULL_ERROR lets the exception through to us.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar, cast

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from rnnexp.errors import UserError

# A file the task uses that the system refuses (permissions, a read-only or full disk): the user's to fix.
FILE_FAULTS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)
USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130
Task = TypeVar("Task", bound=Callable)
_NOISE = (
    "full_key:",
    "object_type=",
    "reference_type=",
    "Set the environment variable HYDRA_FULL_ERROR",
    "To append to your config",
    "Config search path",
    "provider=",
)


def config_error_message(err: BaseException) -> str:
    """Hydra's and OmegaConf's report of a bad override (and its cause), on one line."""
    lines: list[str] = []
    paths: list[str] = []
    cause: BaseException | None = err
    while cause is not None:
        stripped = (line.strip() for line in str(cause).splitlines())
        lines += [line for line in stripped if line and not line.startswith(_NOISE)]
        paths += full_paths(cause)
        cause = cause.__cause__
    named = " or ".join([", ".join(paths[:-1]), paths[-1]] if len(paths) > 1 else paths)
    hint = f"; did you mean {named}?" if paths else ""
    return " ".join(dict.fromkeys(lines)) + hint + " (--help lists the config groups and values)."


def full_paths(err: BaseException) -> list[str]:
    """For a key that a config node lacks, the knobs below that node whose last name it is: every knob is
    set by its full path, so `hidden_dim=50` means `model.hidden_dim=50`."""
    node, key, full_key = (getattr(err, name, None) for name in ("parent_node", "key", "full_key"))
    if not isinstance(node, DictConfig) or not isinstance(key, str) or not isinstance(full_key, str):
        return []
    above = full_key[: -len(key)]  # the node's own path, `dataset.` for `dataset.distance`
    return [above + path for path in leaf_paths(OmegaConf.to_container(node)) if path.endswith(f".{key}")]


def leaf_paths(tree: object, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix]
    return [
        path
        for name, value in tree.items()
        if name != "hydra"
        for path in leaf_paths(value, f"{prefix}.{name}" if prefix else str(name))
    ]


def exit_with(err: UserError) -> None:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(USER_ERROR_EXIT)


def reports_user_errors(task: Task) -> Task:
    """Decorate a Hydra task function: a UserError inside it exits 2 with its one line.

    A config value read inside the task (a mandatory `run_id=` left out) fails here too, before
    Hydra can print "Error executing job" above it.
    """

    @functools.wraps(task)
    def run(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        except UserError as err:
            exit_with(err)
        except MissingMandatoryValue as err:
            exit_with(UserError(f"{err.full_key} is required: add {err.full_key}=<value> (--help shows an example)."))
        except OmegaConfBaseException as err:
            exit_with(UserError(config_error_message(err)))
        except OSError as err:  # caught here, so that run.entry() never takes it for Hydra's output folder
            if err.errno not in FILE_FAULTS:
                raise
            space = err.errno in (errno.ENOSPC, errno.EDQUOT)
            remedy = "free space on its disk" if space else "check its permissions, or point the run elsewhere"
            exit_with(UserError(f"cannot use {err.filename or 'a file'} ({err.strerror}): {remedy}."))

    return cast(Task, run)


def guard(main: Callable[[], object]) -> None:
    """Run a Hydra main; user errors exit 2 with one line on stderr, Ctrl-C exits 130."""
    os.environ["HYDRA_FULL_ERROR"] = "1"
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when the entry point imports MLflow, later
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "Creating initial MLflow database tables" on stderr
    try:
        main()
    except UserError as err:
        exit_with(err)
    except (HydraException, OmegaConfBaseException) as err:
        print(f"error: {config_error_message(err)}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt as err:
        print(f"interrupted: {err}" if str(err) else "interrupted.", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
