"""Measured trials of the sidecar on a live sandbox, behind ``deeplops bench sidecar`` and
``deeplops bench soak``.

``incidents``: one fault at a time on a settled shop sandbox, per policy; detection is seconds
from injection to the first repair applied, recovery to the first decision that sees every
service healthy with the SLO met. Policy ``none`` is the same watcher never acting (the noop
policy): what the stack does on its own. ``watch`` is that trial on any live stack, given how to
set off and end each fault (``composetrial``: the store Compose example, through Docker).

``soak``: the sidecar as a process, as deployed, against random chaos for minutes; its resident
memory sampled throughout, and its audit log checked against its own Prometheus counters.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from deeplops import bounds
from deeplops.actions import Policy, fault_targets
from deeplops.dockerbox import attached, image, stack
from deeplops.errors import SandboxError
from deeplops.faults import PROPER_REPAIR, Fault
from deeplops.policies import load_policy
from deeplops.sidecar.daemon import Sidecar, SidecarConfig
from deeplops.sidecar.guards import GuardConfig
from deeplops.sidecar.telemetry import read_audit
from deeplops.topology import load_topology

NONE = "none"
"""The policy name of 'no sidecar': a watcher that never acts."""
INCIDENTS: tuple[tuple[Fault, str], ...] = (
    (Fault.KILL, "db"),
    (Fault.PAUSE, "cache"),
    (Fault.DISK_FULL, "queue"),
    (Fault.NET_SATURATION, "gateway"),
)
"""The faults of the incident trial, each on a shop service it hurts."""
SETTLED_TICKS = 5
"""Decisions in a row that must see a healthy stack before the next fault."""
MAX_CAP_S = 3_600.0
"""Longest ``--cap`` per incident: four faults per policy, so hours at most."""
MAX_GAP_S = 3_600.0
"""Longest gap between two faults of a soak."""
Log = Callable[[str], None]
Injector = Callable[[str, Fault, str], None]
"""Sets off or ends a fault: (project, fault, target)."""


@dataclass(frozen=True)
class Incident:
    """One fault under one policy."""

    policy: str
    fault: str
    target: str
    detection_s: float | None
    """Injection to the first repair applied (None: none was)."""
    recovery_s: float | None
    """Injection to every service healthy and the SLO met (None: not within the cap)."""
    repairs: tuple[str, ...]
    """Repairs applied meanwhile, as ``repair target``."""


def incidents(policies: list[str], cap_s: float = 30.0, log: Log = print) -> list[Incident]:
    """Each fault of INCIDENTS under each policy, on a fresh shop sandbox per policy."""
    bounds.number(cap_s, "--cap (seconds)", 0.0, MAX_CAP_S, open_low=True)
    loaded = {p: load_policy("noop" if p == NONE else p, "order") for p in policies}  # bad names fail first
    found: list[Incident] = []
    for name, policy in loaded.items():
        with _sandbox(f"dlbench-{os.getpid()}") as project:
            found += watch(name, policy, project, INCIDENTS, cap_s, attached.inject, _proper_repair, log)
    return found


def watch(name: str, policy: Policy, project: str, plan: Sequence[tuple[Fault, str]], cap_s: float,
          inject: Injector, undo: Injector, log: Log, guards: GuardConfig | None = None) -> list[Incident]:  # fmt: skip
    """``policy`` (named ``name``) as a sidecar in this process on the live stack ``project``, and
    each fault of ``plan`` set off by ``inject`` once the stack has settled, one at a time; one
    not recovered within ``cap_s`` is ended by ``undo``, so the next starts from a healthy stack."""
    found: list[Incident] = []
    with tempfile.TemporaryDirectory() as tmp:
        audit = Path(tmp) / "audit.jsonl"
        config = SidecarConfig(project=project, metrics_port=None, audit_log=audit, guards=guards or GuardConfig())
        sidecar = Sidecar(policy, config, log)
        stop = threading.Event()
        thread = threading.Thread(target=sidecar.run, args=(stop,), daemon=True)
        thread.start()
        try:
            for fault, target in plan:
                found.append(_incident(name, project, audit, fault, target, cap_s, inject, undo))
                log(_describe(found[-1]))
        finally:
            stop.set()
            thread.join()
            sidecar.close()
    return found


def _incident(policy: str, project: str, audit: Path, fault: Fault, target: str, cap_s: float, inject: Injector,
              undo: Injector) -> Incident:  # fmt: skip
    _wait(lambda: _settled(_records(audit)), 60, "the stack to settle before the next fault")
    before = len(_records(audit))
    injected = time.time()
    inject(project, fault, target)
    deadline = time.monotonic() + cap_s
    while True:
        time.sleep(0.2)
        detection, recovery, repairs = score(_records(audit)[before:], injected)
        if recovery is not None or time.monotonic() > deadline:
            break
    if recovery is None:  # leave the next incident a healthy stack
        undo(project, fault, target)
    return Incident(policy, fault.label, target, _round(detection), _round(recovery), tuple(repairs))


def _proper_repair(project: str, fault: Fault, target: str) -> None:
    """End a fault on a sandbox with its proper repair, as the oracle would."""
    attached.repair(project, PROPER_REPAIR[fault], target)


def score(records: list[dict[str, Any]], injected: float) -> tuple[float | None, float | None, list[str]]:
    """(detection s, recovery s, repairs applied) from the audit records since a fault was injected.

    Recovery is the first decision that sees every service healthy with the SLO met, once the
    fault has shown or a repair has been applied; what comes after it is not counted.
    """
    detection = None
    shown = False
    repairs: list[str] = []
    for r in records:
        if r.get("event") != "decision":
            continue
        # What a decision saw came before its own repair: a healthy view is a recovery only after
        # an earlier one showed the fault or applied a repair.
        if not _healthy(r):
            shown = True
        elif shown or repairs:
            return detection, r["time"] - injected, repairs
        if r["did"] == "applied":
            repairs.append(f"{r['chose']['repair']} {r['chose']['target']}")
            detection = detection if detection is not None else r["time"] - injected
    return detection, None, repairs


def _describe(i: Incident) -> str:
    det = "-" if i.detection_s is None else f"{i.detection_s:.1f} s"
    rec = "never" if i.recovery_s is None else f"{i.recovery_s:.1f} s"
    return f"{i.policy}: {i.fault} {i.target}: detected {det}, recovered {rec} ({', '.join(i.repairs) or 'no repair'})"


@dataclass(frozen=True)
class Soak:
    """What a soak measured."""

    policy: str
    seconds: float
    faults: list[dict[str, Any]]
    """Each fault injected: at (s), fault, target, and whether the injection took."""
    rss_mb: list[tuple[float, float]]
    """(seconds since start, resident MiB of the sidecar process)."""
    alive: bool
    """The sidecar process ran throughout, and its /healthz said so at the end."""
    exit_code: int | None
    stop_s: float
    """SIGTERM to exit."""
    audit: dict[str, int]
    """What the audit log holds: decisions, repairs judged, decisions suppressed, errors, distinct ticks."""
    counted: dict[str, int]
    """The same, as the sidecar counted them for /metrics (its last audit record)."""
    availability: float
    """Fraction of decisions that saw the SLO met."""

    def to_dict(self) -> dict[str, Any]:
        rss = [r for _, r in self.rss_mb] or [float("nan")]
        return {
            "policy": self.policy, "seconds": round(self.seconds, 1), "faults_injected": len(self.faults),
            "faults": self.faults, "alive": self.alive, "exit_code": self.exit_code, "stop_s": round(self.stop_s, 2),
            "rss_mb_start": round(rss[0], 1), "rss_mb_end": round(rss[-1], 1), "rss_mb_max": round(max(rss), 1),
            "rss_mb": [(t, round(r, 1)) for t, r in self.rss_mb],
            "audit": self.audit, "counted": self.counted, "every_decision_audited": self.audit == self.counted,
            "availability": round(self.availability, 3),
        }  # fmt: skip


def soak(policy: str, seconds: float, gap_s: tuple[float, float] = (10.0, 30.0), seed: int = 0,
         log: Log = print) -> Soak:  # fmt: skip
    """The sidecar process healing a shop sandbox under a random fault every ``gap_s`` seconds."""
    bounds.number(seconds, "the soak's duration (seconds)", 0.0, bounds.MAX_SECONDS, open_low=True)
    low = bounds.number(gap_s[0], "--gap MIN (seconds)", 0.0, MAX_GAP_S, open_low=True)
    bounds.number(gap_s[1], "--gap MAX (seconds)", low, MAX_GAP_S)
    bounds.whole(seed, "--seed", 0, bounds.MAX_SEED)
    load_policy(policy, "order")  # a bad name fails here, not in the child
    rng = random.Random(seed)
    shop = load_topology("shop")
    # Every fault on any service that can take it (a full disk only where there is a volume).
    takes = fault_targets(shop)
    chances = [(f, s) for f in Fault for i, s in enumerate(shop.names) if takes[i, f]]
    with _sandbox(f"dlsoak-{os.getpid()}") as project, tempfile.TemporaryDirectory() as tmp:
        audit, errors, port = Path(tmp) / "audit.jsonl", Path(tmp) / "stderr.log", _free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "deeplops", "sidecar", "--policy", policy, "--project", project,
             "--metrics-port", str(port), "--audit-log", str(audit)],
            stdout=subprocess.DEVNULL, stderr=errors.open("w"),  # a file: a full pipe would stall it
        )  # fmt: skip
        try:
            _wait(lambda: proc.poll() is not None or any(r["event"] == "attached" for r in _records(audit)), 120,
                  "the sidecar to attach")  # fmt: skip
            sampler, faults, rss = psutil.Process(proc.pid), [], []
            start = time.monotonic()
            next_fault, next_sample = start + rng.uniform(*gap_s), start
            while (now := time.monotonic()) - start < seconds and proc.poll() is None:
                if now >= next_sample:
                    rss.append((round(now - start, 1), sampler.memory_info().rss / 2**20))
                    next_sample += 10.0
                if now >= next_fault:
                    fault, target = rng.choice(chances)
                    faults.append(_inject(fault, target, project, round(now - start, 1)))
                    log(f"{now - start:5.0f} s  {fault.label} {target}{'' if faults[-1]['took'] else ' (did not take)'}"
                        f"  rss {rss[-1][1]:.1f} MiB")  # fmt: skip
                    next_fault = now + rng.uniform(*gap_s)
                time.sleep(0.1)
            alive = proc.poll() is None
            if alive:
                rss.append((round(time.monotonic() - start, 1), sampler.memory_info().rss / 2**20))
                alive = _get(port, "/healthz") == 200
            stopped = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            stop_s = time.monotonic() - stopped
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not alive:
            log(f"the sidecar died: {errors.read_text()[-500:]}")
        records = _records(audit)
        last: dict[str, Any] = next((r for r in reversed(records) if r["event"] == "stopped"), {})
        decisions = [r for r in records if r["event"] == "decision"]
        availability = sum(r["slo"] for r in decisions) / max(1, len(decisions))
        return Soak(policy, seconds, faults, rss, alive, code, stop_s, _audited(records), _counted(last), availability)


def _inject(fault: Fault, target: str, project: str, at: float) -> dict[str, Any]:
    try:
        attached.inject(project, fault, target)
        return {"at": at, "fault": fault.label, "target": target, "took": True}
    except SandboxError as exc:  # e.g. a kill of a service being restarted right now
        return {"at": at, "fault": fault.label, "target": target, "took": False, "why": str(exc)}


def _audited(records: list[dict[str, Any]]) -> dict[str, int]:
    """What the audit log holds, in the terms of the sidecar's counters."""
    decisions = [r for r in records if r["event"] == "decision"]
    return {
        "decisions": len(decisions),
        "repairs": sum(r["event"] == "outcome" for r in records) + sum(r["did"] == "failed" for r in decisions),
        "suppressed": sum(r["did"] == "suppressed" for r in decisions),
        "held": sum(r["did"] == "held" for r in decisions),
        "errors": sum(r["event"] == "error" for r in records),
        "ticks": len({r["tick"] for r in decisions}),
    }


def _counted(stopped: dict[str, Any]) -> dict[str, int]:
    """What the sidecar counted (its /metrics counters, in its last audit record)."""
    counted = stopped.get("counted", {})
    keys = ("decisions", "repairs", "suppressed", "held", "errors")
    return {**{k: int(counted.get(k, -1)) for k in keys}, "ticks": int(stopped.get("ticks", -1))}


def _get(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status)
    except OSError:
        return 0


def _records(audit: Path) -> list[dict[str, Any]]:
    return read_audit(audit)


def _healthy(r: dict[str, Any]) -> bool:
    return bool(r["slo"]) and all(s["healthy"] for s in r["saw"].values())


def _settled(records: list[dict[str, Any]]) -> bool:
    seen = [r for r in records if r["event"] == "decision"][-SETTLED_TICKS:]
    return len(seen) == SETTLED_TICKS and all(_healthy(r) for r in seen)


def _wait(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SandboxError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


@contextmanager
def _sandbox(name: str) -> Iterator[str]:
    """A fresh shop sandbox ``name``, taken down afterwards whatever happens."""
    client = stack.connect()
    stack.down(name, client)
    try:
        stack.up(client, load_topology("shop"), name, image.ensure_image(client), {"db": 0.3, "queue": 0.3})
        yield name
    finally:
        attached.release(name)  # its floods: they would outlive the sandbox, sending into the void
        stack.down(name, client)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
