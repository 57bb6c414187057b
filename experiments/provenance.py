"""What a report was made from: the commit, whether the tree was dirty, and a hash of the code itself.

A commit alone does not say what ran when the working tree had uncommitted edits; the hash of
the files that produce a report's numbers does, and it changes whenever one of them does, so a
report can be traced to (and checked against) the exact code behind it.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE_CODE = ("rnnexp", "conf", "pyproject.toml")  # what every report's numbers depend on
# What the reports write (documents, figures, raw results): outputs, not code. Left out of the hash
# and of the dirty flag, so that a report made after another, whose outputs are not committed yet,
# still names the code it ran.
OUTPUT_SUFFIXES = (".md", ".png")
OUTPUT_NAMES = ("results.json", "cache_dynamic.json")


@dataclass(frozen=True)
class Provenance:
    commit: str  # 12 hex digits, or "unknown" outside a git checkout
    dirty: bool | None  # uncommitted changes to the tracked code it hashes (outputs aside); None when unknown
    code_hash: str  # sha256 (first 12 hex digits) of the listed files' paths and bytes

    def markdown(self) -> str:
        dirty = "unknown" if self.dirty is None else "yes" if self.dirty else "no"
        return f"commit `{self.commit}` (uncommitted changes: {dirty}), code hash `{self.code_hash}`"


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def code_files(paths: Sequence[str]) -> list[Path]:
    """The files under `paths` (relative to the project) that git tracks or would track, sorted."""
    listed = _git("ls-files", "--cached", "--others", "--exclude-standard", "--", *paths)
    if listed is None:
        found = [p for path in paths for p in ([ROOT / path] if (ROOT / path).is_file() else (ROOT / path).rglob("*"))]
    else:
        found = [ROOT / line for line in listed.splitlines() if line]
    return sorted(p for p in found if p.is_file() and _is_code(p))


def _is_code(path: Path) -> bool:
    return (
        "__pycache__" not in path.parts
        and path.suffix not in (".pyc", *OUTPUT_SUFFIXES)
        and path.name not in OUTPUT_NAMES
    )


def code_hash(paths: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for path in code_files(paths):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def provenance(paths: Sequence[str]) -> Provenance:
    """The checkout's commit, whether the code under `paths` (plus ENGINE_CODE) differs from it, and its hash."""
    code = [*ENGINE_CODE, *paths]
    commit = (_git("rev-parse", "HEAD") or "unknown").strip()[:12] or "unknown"
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", *code)
    dirty = None if changed is None else any(_is_code(Path(line[3:])) for line in changed.splitlines() if line)
    return Provenance(commit, dirty, code_hash(code))


def relative(path: str | Path) -> str:
    """A path as the report should name it: relative to the project when inside it."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(ROOT).as_posix()
    except ValueError:
        return Path(path).name
