"""A data volume's data, and its restore from backup after a ``recreate`` destroyed it (docs/design.md §4.2).

A service's data is one file, ``DATA_NAME``, of ``DATA_BYTE`` repeated: the data set the sandbox
seeds each volume with at ``up`` (``stack.prepare_volume``), and so what its backup holds. A
recreate mounts a fresh, empty volume and writes a restore plan (``PLAN_NAME``) into it; the
service program restores the data itself when it starts (``sandbox/service.py``), at the rate
that makes a full volume take ``RESTORE_TICKS_PER_VOLUME`` ticks, failing its users until done,
and deletes the plan. The service does it, not a host process: the restore then lives and dies
with the service as a real one does (frozen by a pause, stopped by a kill, resumed by a restart),
outlives the process that asked for the recreate (a sidecar, a Chaos Toolkit run), and needs
nothing here to keep running.

The volume is the container's to write, so what is read back from it is never trusted: no link
is followed, sizes are held to the volume's, and a plan that does not parse counts as none.
"""

from __future__ import annotations

import json
import math
import os
import stat

from deeplops.dockerbox import host
from deeplops.system import RESTORE_TICKS_PER_VOLUME, TICK_S
from deeplops.topology import Service

DATA_NAME = "data.bin"
"""The service's data in its volume."""
DATA_BYTE = 1
"""The data's content, this byte value repeated (it is a stand-in; its size is what matters)."""
PLAN_NAME = ".restore-plan.json"
"""The restore plan in a volume: there while a restore is owed, deleted by the service when done."""
_PLAN_LIMIT = 4096


def volume_bytes(service: Service) -> int:
    """Size of the service's volume in bytes."""
    return service.disk_mb * 2**20


def restore_ticks(size: int, service: Service) -> int:
    """Ticks a restore of ``size`` bytes of the service's data takes: ``ceil(fraction × RESTORE_TICKS_PER_VOLUME)``."""
    fraction = min(1.0, size / volume_bytes(service)) if service.disk_mb else 0.0
    return math.ceil(fraction * RESTORE_TICKS_PER_VOLUME)


def data_size(sandbox: str, service: Service) -> int:
    """Bytes of data in the service's volume now (its data file only, never the junk a disk_full
    wrote); 0 when the file is missing or is not a regular file."""
    with host.open_volume(host.volume_dir(sandbox, service.name)) as volume:
        try:
            st = os.stat(DATA_NAME, dir_fd=volume, follow_symlinks=False)
        except FileNotFoundError:
            return 0
    return min(st.st_size, volume_bytes(service)) if stat.S_ISREG(st.st_mode) else 0


def planned_size(sandbox: str, service: Service) -> int | None:
    """The size a restore under way in the service's volume brings its data back to; None when no
    restore is owed (or its plan is not one: the container may have written anything there)."""
    with host.open_volume(host.volume_dir(sandbox, service.name)) as volume:
        try:
            fd = os.open(PLAN_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=volume)
        except OSError:
            return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        text = os.read(fd, _PLAN_LIMIT + 1)
    finally:
        os.close(fd)
    try:
        size = json.loads(text).get("size") if len(text) <= _PLAN_LIMIT else None
    except (ValueError, AttributeError):
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return None
    return min(size, volume_bytes(service))


def data_held(sandbox: str, service: Service) -> int:
    """Bytes of data the service's volume holds as far as its backup knows: the data file, or all
    of what a restore under way is bringing back (the backup holds it all, restored or not)."""
    if not os.path.lexists(host.volume_dir(sandbox, service.name)):
        return 0  # no volume at all: nothing to restore into it
    return max(data_size(sandbox, service), planned_size(sandbox, service) or 0)


def plan(sandbox: str, service: Service, size: int) -> int:
    """Write a plan into the service's fresh volume to restore ``size`` bytes of its data; the ticks
    the restore takes."""
    ticks = restore_ticks(size, service)
    doc = {"file": DATA_NAME, "size": size, "seconds": ticks * TICK_S, "byte": DATA_BYTE}
    host.write_new(host.volume_dir(sandbox, service.name), PLAN_NAME, json.dumps(doc).encode())
    return ticks
