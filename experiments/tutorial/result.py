"""One claim's outcome: the published figure beside the reproduced one, and why they differ."""

from __future__ import annotations

from dataclasses import dataclass, field

REPRODUCED = "reproduced"  # the same figure, within the stated tolerance
CONSISTENT = "consistent"  # the same conclusion; the numbers differ for a stated reason
NEEDS_FULL_DATA = "needs the full file"  # the excerpt cannot give the published figure
NOT_REPRODUCED = "not reproduced"
NOT_CHECKED = "not checked"  # the claim's figure cannot be measured here at all


@dataclass
class ClaimResult:
    number: int
    title: str
    published: str
    reproduced: str
    verdict: str
    reason: str
    command: str
    source: str = ""  # where the claim is published: the tutorial itself, or WildML part 2 (published.py)
    details: list[str] = field(default_factory=list)  # markdown blocks shown under the claim
    figures: list[str] = field(default_factory=list)  # PNG names, beside the report
    metrics: dict[str, float] = field(default_factory=dict)  # logged to the claim's MLflow run
    params: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None  # the claim's MLflow run

    @property
    def passed(self) -> bool:
        """Whether the claim holds here (a figure that needs the full file is not a failure)."""
        return self.verdict not in (NOT_REPRODUCED, NOT_CHECKED)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
