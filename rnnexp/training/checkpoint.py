"""Checkpoints: one .npz of plain arrays that loads with allow_pickle=False, so loading never runs code.

Parameters, optimiser state and other arrays are stored under prefixed keys (`params/U`,
`optimizer/m.V`, `arrays/order`); everything else (counters, loss history, the NumPy generator's
state, whose 128-bit integers fit no array dtype, the run's config) is one JSON string.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnexp.config import as_tree, resolve
from rnnexp.config.schema import RESUME_KEYS
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
    """The sentence for a checkpoint that cannot be written, with the remedy its cause calls for."""
    folder = path if path.suffix != ".npz" else path.parent
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        remedy = f"free space in {folder}"
    elif err.errno in (errno.ENOTDIR, errno.EEXIST):  # a file where a folder should be
        in_the_way = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        remedy = f"{in_the_way} is a file, not a folder: move it"
    else:
        remedy = f"make {folder} writable"
    return UserError(
        f"cannot write the checkpoint {path} ({err.strerror or err}): {remedy}, or set train.checkpoint_dir to "
        "another folder; the last good checkpoint is intact."
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


def config_digest(config: dict) -> str:
    """A digest of a run's config as plain data, the same before and after any resume of it."""
    bound = copy.deepcopy(config)
    for dotted in RESUME_KEYS:
        *parents, leaf = dotted.split(".")
        node = bound
        for parent in parents:
            node = node.get(parent) or {}
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(bound, sort_keys=True).encode("utf-8")).hexdigest()


def shapes(params: dict[str, np.ndarray]) -> dict[str, list[int]]:
    return {name: list(value.shape) for name, value in params.items()}


@dataclass
class Owner:
    """What a checkpoint must match to continue a run: the run, its logged config, data and model shapes."""

    run_id: str
    config_digest: str | None  # None: the run logged no config (killed while it described itself)
    data_digest: str | None  # None: the run logged no dataset_digest tag
    shapes: dict[str, list[int]] | None  # None: the model's shapes could not be known before its data


def verify_owner(path: Path, saved: Checkpoint, owner: Owner) -> None:
    """Refuse, in one sentence naming both sides, a checkpoint that belongs to another run or config.

    A checkpoint saved before these fields existed is checked on what it holds: its run id and config
    (always there), its shapes against the config's; its data digest only when it has one.
    """
    meta = saved.meta
    actual = shapes(saved.params)
    found = [
        f"it belongs to run {meta.get('run_id')}, not {owner.run_id}" if meta.get("run_id") != owner.run_id else "",
        differs("config digest", saved_config_digest(meta), owner.config_digest),
        differs("data digest", meta.get("data_digest"), owner.data_digest),
        shape_mismatch(actual, owner.shapes),
        "its arrays differ from the shapes it was saved with" if meta.get("shapes") not in (None, actual) else "",
    ]
    mismatches = [reason for reason in found if reason]
    if mismatches:
        raise UserError(
            f"the checkpoint {path} does not belong to run {owner.run_id} ({'; '.join(mismatches)}): resume "
            "from that run's own checkpoint, or start a new run; the run is left as it was."
        )


def saved_config_digest(meta: dict) -> str | None:
    """The digest of the config a checkpoint holds, through today's schema, so that a knob added since
    (with its default) does not set a checkpoint apart from the config its run logged."""
    if "config" not in meta:
        return meta.get("config_digest")
    return config_digest(as_tree(resolve(meta["config"])))


def differs(what: str, saved: str | None, expected: str | None) -> str:
    """`its <what> <saved> differs from the run's <expected>`, or '' where they agree or one is unknown."""
    if saved is None or expected is None or saved == expected:
        return ""
    return f"its {what} {saved[:12]} differs from the run's {expected[:12]}"


def shape_mismatch(
    actual: dict[str, list[int]], expected: dict[str, list[int]] | None, model: str = "the run's model"
) -> str:
    """What differs between a checkpoint's parameter shapes and `model`'s, or '' where they agree or it is unknown."""
    if expected is None or actual == expected:
        return ""
    if set(actual) != set(expected):
        return f"it holds parameters {sorted(actual)}, {model} has {sorted(expected)}"
    wrong = [
        f"{name} {'×'.join(map(str, actual[name]))} vs {'×'.join(map(str, expected[name]))}"
        for name in sorted(actual)
        if actual[name] != expected[name]
    ]
    return f"its parameter shapes differ from those of {model} ({', '.join(wrong)})"


def generator_state(rng: np.random.Generator) -> dict:
    """The generator's exact state as JSON-serialisable data (Python ints keep all 128 bits)."""
    return dict(rng.bit_generator.state)


def restore_generator(state: dict) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
