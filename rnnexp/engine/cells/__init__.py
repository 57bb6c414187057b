"""The gated model's cells: `rnnexp.engine.cells.<name>` holds the cell `model.cell=<name>` names, as `CELL`.

The names themselves are listed once, in `rnnexp.config.schema.CELLS`, which the config checks read
before any model is built; ARCHITECTURE.md's "Where to add → A cell" walks through adding one.
"""

from __future__ import annotations

import importlib
from typing import Any

from rnnexp.engine.cells.protocol import Cell


def load_cell(name: str) -> type[Cell[Any, Any]]:
    """The cell class of `model.cell=name` (a name `config.resolve.validate_model` has accepted)."""
    return importlib.import_module(f"{__name__}.{name}").CELL


__all__ = ["Cell", "load_cell"]
