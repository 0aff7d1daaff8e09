"""Which process runs a training run, and whether it still does (no Django).

A run killed with SIGKILL, or on a machine that restarted, never records its end: its row
said "running" for good. The run keeps a tag of its process instead, "host pid start
pid-namespace", and a process of this host and namespace is looked up in /proc. The start
time is there because pids are reused: a later process with the same pid is not the run's.
Whatever cannot be told from here (another host, another container) counts as alive.
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


def _pid_namespace() -> str:
    """The inode of this process's pid namespace: containers sharing a host name do not share
    pids, so a pid means something only within one namespace."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def this_process() -> str:
    """The tag of this process: "host pid start pid-namespace"."""
    pid = os.getpid()
    return f"{socket.gethostname()} {pid} {_start_time(pid) or '-'} {_pid_namespace()}"


def describe(tag: str) -> str:
    parts = tag.split()
    return f"pid {parts[1]} on {parts[0]}" if len(parts) in (3, 4) else tag or "an unknown process"


def is_alive(tag: str) -> bool | None:
    """Whether the tagged process still runs: True or False for a process of this host and
    pid namespace; None when the tag is another host's or namespace's, or unreadable
    (nothing can be told from here)."""
    parts = tag.split()
    if len(parts) not in (3, 4) or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return None
    if len(parts) == 4 and parts[3] != _pid_namespace():
        return None
    pid = int(parts[1])
    start = _start_time(pid)
    if start is not None:
        return parts[2] in ("-", start)  # another start time: the pid was reused
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process, hidden from /proc (hidepid)
    return True  # no /proc here (macOS): the pid alone
