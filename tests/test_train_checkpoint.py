"""Checkpoint files: plain arrays and JSON, read without pickle, exact to the bit."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rnnexp.errors import UserError
from rnnexp.training import checkpoint


def test_a_checkpoint_round_trips_arrays_progress_and_the_generator_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    rng.permutation(100)  # a generator part-way through its stream
    params = {"U": np.asfortranarray(rng.standard_normal((3, 5)).astype(np.float32)), "W": rng.standard_normal((3, 3))}
    meta = {
        "progress": {"step": 12, "best_val_loss": math.inf, "losses": [0.1 + 0.2]},
        "rng": checkpoint.generator_state(rng),
    }
    checkpoint.save(
        tmp_path / "c.npz", checkpoint.Checkpoint(params, {"t": np.array(3)}, meta, {"order": np.arange(4)})
    )

    loaded = checkpoint.load(tmp_path / "c.npz")
    assert all(np.array_equal(loaded.params[k], v) and loaded.params[k].dtype == v.dtype for k, v in params.items())
    assert int(loaded.optimizer["t"]) == 3 and np.array_equal(loaded.arrays["order"], np.arange(4))
    assert loaded.meta["progress"] == {"step": 12, "best_val_loss": math.inf, "losses": [0.30000000000000004]}
    assert np.array_equal(checkpoint.restore_generator(loaded.meta["rng"]).random(5), rng.random(5))
    assert not list(tmp_path.glob("*.partial"))


def test_a_checkpoint_needing_pickle_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "evil.npz", meta=np.array([{"code": "runs on load"}], dtype=object))
    with pytest.raises(UserError, match="not a readable rnnexp checkpoint"):
        checkpoint.load(tmp_path / "evil.npz")


def test_a_damaged_or_missing_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "cut.npz").write_bytes(b"PK\x03\x04 not a whole zip")
    with pytest.raises(UserError, match="cut.npz is not a readable rnnexp checkpoint"):
        checkpoint.load(tmp_path / "cut.npz")
    with pytest.raises(UserError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "absent.npz")
