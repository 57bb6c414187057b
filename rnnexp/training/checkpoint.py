"""Checkpoints: one .npz of plain arrays that loads with allow_pickle=False, so loading never runs code.

Parameters, optimiser state and other arrays are stored under prefixed keys (`params/U`,
`optimizer/m.V`, `arrays/order`); everything else (counters, loss history, the NumPy generator's
state, whose 128-bit integers fit no array dtype, the run's config) is one JSON string.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnexp.errors import UserError

SECTIONS = ("params", "optimizer", "arrays")


@dataclass
class Checkpoint:
    params: dict[str, np.ndarray]
    optimizer: dict[str, np.ndarray]
    meta: dict  # JSON-serialisable
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def save(path: Path, checkpoint: Checkpoint) -> None:
    """Write atomically: a crash or a full disk mid-write leaves the previous checkpoint intact and no
    `.partial` behind; a folder that cannot be written is one sentence naming it."""
    entries = {f"{section}/{key}": value for section in SECTIONS for key, value in getattr(checkpoint, section).items()}
    entries["meta"] = np.array(json.dumps(checkpoint.meta))
    partial = path.with_name(path.name + ".partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as file:
            np.savez(file, **entries)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise unwritable(path, err) from None


def check_writable(folder: Path) -> None:
    """Fail at the start of a run, not at its first checkpoint, when `folder` cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as err:
        raise unwritable(folder, err) from None


def unwritable(path: Path, err: OSError) -> UserError:
    folder = path if path.suffix != ".npz" else path.parent
    return UserError(
        f"cannot write the checkpoint {path} ({err.strerror or err}): free space in {folder} or make it "
        "writable, or set train.checkpoint_dir to another folder; the last good checkpoint is intact."
    )


def load(path: Path) -> Checkpoint:
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: give an existing .npz file or a run id to resume=.")
    sections: dict[str, dict[str, np.ndarray]] = {section: {} for section in SECTIONS}
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            for key in data.files:
                section, _, name = key.partition("/")
                if section != "meta":
                    sections[section][name] = data[key]
    except (zipfile.BadZipFile, ValueError, KeyError, OSError) as err:
        raise UserError(
            f"{path} is not a readable rnnexp checkpoint ({err}): it is damaged or not a checkpoint; give another one."
        ) from None
    return Checkpoint(sections["params"], sections["optimizer"], meta, sections["arrays"])


def generator_state(rng: np.random.Generator) -> dict:
    """The generator's exact state as JSON-serialisable data (Python ints keep all 128 bits)."""
    return dict(rng.bit_generator.state)


def restore_generator(state: dict) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
