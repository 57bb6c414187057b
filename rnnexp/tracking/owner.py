"""Who runs a run: its owner's host, pid and process start time in tags, and a heartbeat tag.

A run names its owner when it starts and refreshes the heartbeat while it runs (logger.RunLogger),
so that `is_alive` can tell a running run from one whose process is gone: by its pid on this host
(with the process's start time, since pids are reused), by its heartbeat elsewhere.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from mlflow.entities import Run

HOST_TAG, PID_TAG, PID_START_TAG, HEARTBEAT_TAG = "owner.host", "owner.pid", "owner.pid_start", "owner.heartbeat"
HEARTBEAT_EVERY_S = 30.0
STALE_AFTER_S = 180.0  # a run on another host without a heartbeat for this long has lost its process


def owner_tags() -> dict[str, str]:
    """Who runs a run: this host, this process and its start time (pids are reused), a first heartbeat."""
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
        PID_START_TAG: process_start(os.getpid()),
        HEARTBEAT_TAG: str(int(time.time())),
    }


def process_start(pid: int) -> str:
    """The process's start time in clock ticks after boot ('' where /proc cannot tell), and 'zombie' for one
    that has exited but not been reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return ""
    return "zombie" if fields[0] in ("Z", "X") else fields[19]


def pid_alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    now = process_start(pid)
    return now != "zombie" and (not start or not now or now == start)


def is_alive(run: Run, now: float | None = None) -> bool:
    """Whether a RUNNING run's process still runs: by its pid on this host, by its heartbeat elsewhere."""
    if run.info.status != "RUNNING":
        return False
    tags = run.data.tags
    if tags.get(HOST_TAG) == socket.gethostname() and tags.get(PID_TAG, "").isdigit():
        return pid_alive(int(tags[PID_TAG]), tags.get(PID_START_TAG))
    beat = tags.get(HEARTBEAT_TAG)
    last = float(beat) if beat else run.info.start_time / 1000
    return (now or time.time()) - last < STALE_AFTER_S


def owned_here(run: Run) -> bool:
    tags = run.data.tags
    return tags.get(HOST_TAG) == socket.gethostname() and tags.get(PID_TAG) == str(os.getpid())


def owner(run: Run) -> str:
    """Where a run runs, for messages: 'pid 123 on host h, last heartbeat 12 s ago'."""
    tags = run.data.tags
    beat = tags.get(HEARTBEAT_TAG)
    ago = f", last heartbeat {time.time() - float(beat):.0f} s ago" if beat else ""
    return f"pid {tags.get(PID_TAG, '?')} on host {tags.get(HOST_TAG, '?')}{ago}"
