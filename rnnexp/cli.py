"""The entry points' promise: a mistake the user can fix is one line on stderr and exit status 2.

Hydra prints its own multi-line report for a bad override and exits 1; with HYDRA_FULL_ERROR set
it lets the exception through instead, and `guard` turns it into that one line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from rnnexp.errors import UserError

USER_ERROR_EXIT = 2
INTERRUPTED_EXIT = 130
_NOISE = ("full_key:", "object_type=", "reference_type=", "Set the environment variable HYDRA_FULL_ERROR")


def config_error_message(err: BaseException) -> str:
    """Hydra's and OmegaConf's report of a bad override (and its cause), on one line."""
    lines: list[str] = []
    while err is not None:
        lines += [line.strip() for line in str(err).splitlines() if line.strip() and not line.strip().startswith(_NOISE)]
        err = err.__cause__
    return " ".join(dict.fromkeys(lines)) + " (--help lists the config groups and values)."


def guard(main: Callable[[], object]) -> None:
    """Run a Hydra main; user errors exit 2 with one line on stderr, Ctrl-C exits 130."""
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except (HydraException, OmegaConfBaseException) as err:
        print(f"error: {config_error_message(err)}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
    except KeyboardInterrupt:
        print("interrupted.", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
