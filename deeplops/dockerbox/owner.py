"""Who a sandbox is made for: a process's identity as recorded on what it owns, and whether it is gone.

An owner is recorded as ``PID:START:BOOT:PIDNS`` (``owner_id``): the process id, its start time in
clock ticks since boot (from ``/proc/PID/stat``), the boot's id and the PID namespace. A PID
reused by a later process, or a reboot since, reads as gone; an owner in another PID namespace
(another container) cannot be judged from here and never reads as gone.
"""

from __future__ import annotations

import os
from pathlib import Path


def owner_id(pid: int) -> str:
    """The identity of live process ``pid``, as recorded on the sandboxes it owns."""
    stat = _stat(pid)
    if stat is None:
        raise ProcessLookupError(pid)
    return f"{pid}:{stat[1]}:{_boot_id()}:{_pid_ns()}"


def owner_gone(owner: str) -> bool:
    """Whether the process recorded as ``owner`` has certainly exited; False when it cannot be
    told (another PID namespace, or a record this version did not write)."""
    parts = owner.split(":")
    if len(parts) != 4 or not parts[0].isdigit() or not parts[1].isdigit():
        return False
    pid, start, boot, ns = parts
    if boot != _boot_id():
        return True
    if ns != _pid_ns():
        return False
    stat = _stat(int(pid))
    return stat is None or stat[1] != start or stat[0] in ("Z", "X")  # a zombie is dead, just not yet reaped


def owner_pid(owner: str) -> int | None:
    """The process id in an owner record, or None if it holds none."""
    pid = owner.split(":", 1)[0]
    return int(pid) if pid.isdigit() else None


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of process ``pid``, or None if there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]  # fields 3 and 22 of proc(5): the command name may hold spaces


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_ns() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""
