"""The Hydra callback that conf/config.yaml names: a sweep's MLflow parent run, loaded only for a sweep.

Hydra builds its callbacks for every run, a single one too. Importing the sweep machinery, or
anything in rnnexp.tracking, imports MLflow (about 1.5 s); this callback lives outside that
package and loads it only when a multirun starts, so a single run's config error answers at once.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepCallback(Callback):
    """Hands a multirun's start and end to `rnnexp.tracking.sweep.SweepParent`, made when the multirun starts."""

    def __init__(self) -> None:
        self._sweep: Callback | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from rnnexp.tracking.sweep import SweepParent

        self._sweep = SweepParent()
        self._sweep.on_multirun_start(config, **kwargs)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._sweep is not None:
            self._sweep.on_multirun_end(config, **kwargs)
