"""Dividing units (comments, lines, sentences) into train / valid / test by configured fractions."""

from __future__ import annotations

import numpy as np

from rnnexp.data.corpus import SPLIT_NAMES
from rnnexp.errors import UserError


def split_sizes(n_units: int, valid_fraction: float, test_fraction: float, unit: str) -> tuple[int, int, int]:
    """Rounded sizes; a non-zero fraction gets at least one unit, train keeps at least one."""

    def size(fraction: float) -> int:
        return max(1, round(n_units * fraction)) if fraction > 0 else 0

    n_valid, n_test = size(valid_fraction), size(test_fraction)
    n_train = n_units - n_valid - n_test
    if n_train < 1:
        raise UserError(
            f"Only {n_units} {unit} are left, too few for valid_fraction={valid_fraction} and "
            f"test_fraction={test_fraction}; use more data or smaller fractions."
        )
    return n_train, n_valid, n_test


def contiguous_labels(n_units: int, valid_fraction: float, test_fraction: float, unit: str) -> np.ndarray:
    """Train first, then valid, then test, in source order (text keeps its passages whole)."""
    sizes = split_sizes(n_units, valid_fraction, test_fraction, unit)
    return np.repeat(np.arange(len(SPLIT_NAMES)), sizes)


def random_labels(n_units: int, valid_fraction: float, test_fraction: float, seed: int, unit: str) -> np.ndarray:
    """A seeded random assignment of units to splits (labels 0 train, 1 valid, 2 test)."""
    ordered = contiguous_labels(n_units, valid_fraction, test_fraction, unit)
    return ordered[np.random.default_rng(seed).permutation(n_units)]
