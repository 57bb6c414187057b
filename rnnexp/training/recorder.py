"""What the trainer logs into: a protocol, so that training never imports the tracking layer above it.

`rnnexp.tracking.RunLogger` is the implementation (an MLflow run); tests may pass any object with
these methods.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class Recorder(Protocol):
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    def log_figure(self, figure: Any, artifact_file: str) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def pending(self) -> list[tuple[str, float, int]]: ...
