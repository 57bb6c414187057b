"""The output layer's view of the parameters when the output matrix is the embedding (tied weights)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

import numpy as np


class TiedOutput(MutableMapping):
    """Parameters as the output layer sees them under tied weights: its (V, H) matrix is Uᵀ; parameters
    of its own (the class output's `Vc`, the biases `Vb` and `Vcb`) are the model's, added to `params`."""

    OWN = ("Vc", "Vb", "Vcb")

    def __init__(self, params: dict[str, np.ndarray]):
        self.params = params

    def __getitem__(self, key: str) -> np.ndarray:
        if key == "V":
            return self.params["U"].T
        if key not in self.OWN:
            raise KeyError(key)
        return self.params[key]

    def __setitem__(self, key: str, value: np.ndarray) -> None:
        if key not in self.OWN:
            raise KeyError(key)
        self.params[key] = value

    def __delitem__(self, key: str) -> None:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(["V", *(key for key in self.OWN if key in self.params)])

    def __len__(self) -> int:
        return len(list(iter(self)))
