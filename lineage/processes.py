"""Which process runs a training run, and whether it still does (no Django).

A run killed with SIGKILL, or on a machine that restarted, never records its end: its row
said "running" for good. The run keeps a tag of its process instead, "host pid start", and
a process of this host is looked up in /proc. The start time is there because pids are
reused: a later process with the same pid is not the run's.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2, the command name, is in parentheses and may hold spaces: count after it.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def this_process() -> str:
    """The tag of this process: "host pid start"."""
    pid = os.getpid()
    return f"{socket.gethostname()} {pid} {_start_time(pid) or '-'}"


def describe(tag: str) -> str:
    parts = tag.split()
    return f"pid {parts[1]} on {parts[0]}" if len(parts) == 3 else tag or "an unknown process"


def is_alive(tag: str) -> bool | None:
    """Whether the tagged process still runs: True or False on this host; None when the tag
    is another host's, or unreadable (nothing can be told from here)."""
    parts = tag.split()
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    pid = int(parts[1])
    if Path("/proc/self/stat").exists():
        start = _start_time(pid)
        return start is not None and parts[2] in ("-", start)
    try:  # no /proc (macOS): the pid alone
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
