"""Chaos Toolkit actions: inject a deeplops fault into, or repair, a service of a live sandbox.

Each takes effect for real (the Docker backend's mechanisms) and is checked to have taken
effect before it returns; a failure raises, which Chaos Toolkit reports as a failed activity.
"""

from __future__ import annotations

from typing import Any

from deeplops.dockerbox import attached
from deeplops.errors import SandboxError
from deeplops.faults import Fault, Repair

__all__ = ["inject_fault", "repair"]


def inject_fault(fault: str, target: str, sandbox: str) -> dict[str, Any]:
    """Inject ``fault`` (kill, pause, cpu_hog, disk_full, net_saturation, bad_deploy, memory_leak,
    conn_leak) into service ``target`` of the live sandbox ``sandbox``."""
    code = Fault.parse(fault, SandboxError)
    attached.inject(sandbox, code, target)
    return {"fault": code.label, "target": target, "sandbox": sandbox}


def repair(repair: str, target: str, sandbox: str) -> dict[str, Any]:
    """Apply ``repair`` (restart, clean_disk, rate_limit, recreate, rollback) to service ``target``
    of the live sandbox ``sandbox``."""
    code = Repair.parse(repair, SandboxError)
    attached.repair(sandbox, code, target)
    return {"repair": code.label, "target": target, "sandbox": sandbox}
