"""Measure the real system, and derive the simulator's parameters from what was measured.

``deeplops sandbox calibrate`` runs this on ``shop``: a healthy baseline, then every fault on a
service with its proper repair, timing each mechanism and reading the symptoms tick by tick.
A recreate is timed on a service without a volume (the mechanism's own downtime), and then on one
with data, whose restore from backup is checked against ``restore.restore_ticks`` (a rule of the
world, docs/design.md §4.2, not a fitted parameter). The result (``sandbox/calibration.json`` in
the repository) holds the raw figures and the ``SimParams`` fields they give; ``SimParams()``'s
defaults are those fields.

Then every other kind is measured on ``store`` the same way (``calibrate_kinds``): the faults a
restart ends, a bad deploy and its rollback, a full disk where the kind has a volume, and a
recreate, each on the service of that kind, and how long users are still served once a kind's
disk is full, by when it filled (a database writes into the page it is filling until it needs a
new one); ``derive_kinds`` turns them into the kinds' profiles (``sim_params.kinds``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from deeplops.dockerbox import restore
from deeplops.dockerbox.sandbox import DockerSandbox
from deeplops.faults import PROPER_REPAIR, Fault, Repair
from deeplops.observation import Feature
from deeplops.sandbox import Sandbox
from deeplops.topology import Topology, load_topology

BASELINE_TICKS = 20
FAULT_TICKS = 8
DEPLOY_WATCH_TICKS = 10
"""Longest a deploy is waited for to start its new release before its symptoms are read."""
RECOVERY_TICKS = 6
RECREATE_TARGET = "cache"
"""Where a recreate's own downtime is timed: a service without a volume, so nothing is restored."""
RESTORE_TARGET = "db"
"""Where a restore after a recreate is timed: a service whose volume holds data."""
RESTORE_SLACK_TICKS = 5
"""Ticks a restore is watched beyond what it should take."""
TARGETS = {
    Fault.KILL: "api",
    Fault.PAUSE: "api",
    Fault.CPU_HOG: "api",
    Fault.DISK_FULL: "db",
    Fault.NET_SATURATION: "api",
    Fault.BAD_DEPLOY: "api",
}
"""Where each fault is measured on ``shop``. Not a memory leak: its course (the kill, ticks after the
deploy) follows from ``system.LEAK_MB_PER_TICK`` and the service's memory at work, which the baseline
measures, rules of the world checked by tests/test_docker_leaks.py, not parameters to fit. Nor a
connection leak, for the same reason: its course (the database full, every client of it failing)
follows from ``system.CONN_LEAK_PER_TICK`` and the connections at work, checked by
tests/test_docker_conn_leak.py (and it needs an app or a worker on PostgreSQL, which ``shop`` has not)."""


KIND_TARGETS = {"postgres": "db", "redis": "queue", "nginx": "gateway", "app": "app", "worker": "worker"}
"""Where each kind is measured on ``store``: the service of that kind (the Redis with a volume)."""
KIND_RECREATE_TARGETS = {"redis": "cache"}
"""Where a kind's recreate is timed when its KIND_TARGETS service holds data (a PostgreSQL always does)."""
FULL_DISK_WATCH_TICKS = 60
"""Longest a full disk is watched for the first failed user request."""
FULL_DISK_AFTER = (1, 13)
"""Ticks after a reset a store's disk is filled, to time how long its users are still served: the
first gives the kind's ``page_ticks`` (fresh data files, the first page); the second shows how
that depends on when the disk filled (later in PostgreSQL's first page, past Redis's)."""
FULL_DISK_REPEATS = 3
"""Times each is measured."""
FAILED_ERROR_RATE = 0.5
"""A target whose user requests failed at least this often in a tick failed them; below it, a
missed SLO was late answers (the error rate is over a handful of requests a tick)."""
START_TARGET = "api"
"""Where the generic service's new processes are read (``measure_starts``)."""
START_REPEATS = 3
"""Restarts of each kind (after a kill, of a live process) whose readings are taken."""
START_SETTLE_TICKS = 3
"""Ticks before each, for the previous restart's readings to settle."""
RESTARTED_BY = (Fault.KILL, Fault.PAUSE, Fault.CPU_HOG)
"""The faults a restart ends, each measured on every kind."""
EVERY_KIND = (*RESTARTED_BY, Fault.BAD_DEPLOY)
"""The faults measured on every kind: a bad deploy too (its broken release's symptoms, and the
rollback's downtime; about 20 s a kind). Not a memory leak nor a connection leak, for the reason
TARGETS gives."""
LIVE_RESTARTS = ("pause", "cpu_hog")
"""The faults whose restart stops a live process first: a restart's downtime is the mean over
them. One of a killed process has nothing to stop: what that saves is the kill's own figure
(``sim.KindProfile.dead_start_saves``; the generic program's is ``simkernel.DEAD_START_SAVES``,
which its kill here checks)."""


def calibrate(topology: Topology | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure the generic service on ``shop`` and every other kind on ``store``; return the raw
    figures and the derived sim parameters (the kinds' under ``sim_params.kinds``)."""
    result = calibrate_generic(topology, log)
    result["measured"]["kinds"] = calibrate_kinds(log=log)
    result["sim_params"]["kinds"] = derive_kinds(result["measured"]["kinds"])
    return result


def calibrate_generic(topology: Topology | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every measurement of the generic service on a fresh sandbox; raw figures and the derived sim parameters."""
    topology = topology or load_topology("shop")
    box = DockerSandbox(topology, name=f"deeplops-calibrate-{int(time.time())}", log=log)
    try:
        start = time.monotonic()
        box.reset([0])
        up_s = time.monotonic() - start
        log(f"up in {up_s:.1f} s; baseline for {BASELINE_TICKS} ticks")
        baseline = _baseline(box)
        faults = {}
        for fault, target in TARGETS.items():
            log(f"{fault.label} on {target}")
            box.reset([0])
            faults[fault.label] = measure_fault(box, fault, target)
        log(f"recreate of {RECREATE_TARGET}")
        box.reset([0])
        recreate = _repair_only(box, RECREATE_TARGET, Repair.RECREATE)
        log(f"recreate of {RESTORE_TARGET}, and the restore of its data")
        box.reset([0])
        restored = _restore(box, RESTORE_TARGET)
        log("cascade: ticks for a kill of db to reach gateway")
        box.reset([0])
        cascade = _cascade(box)
        log(f"the CPU of {START_TARGET}'s new processes")
        box.reset([0])
        starts = measure_starts(box, START_TARGET)
    finally:
        box.close()
    raw = {"up_s": up_s, "baseline": baseline, "faults": faults, "recreate": recreate, "restore": restored,
           "cascade": cascade, "starts": starts}  # fmt: skip
    return {"topology": topology.name, "measured": raw, "sim_params": derive(raw)}


def calibrate_kinds(topology: Topology | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Each kind's own figures on ``store``: what its restart, recreate and clean_disk leave down,
    its symptoms under every fault, and how long measuring the whole system takes."""
    topology = topology or load_topology("store")
    box = DockerSandbox(topology, name=f"deeplops-kinds-{int(time.time())}", log=log)
    kinds: dict[str, Any] = {}
    try:
        box.reset([0])
        log(f"{topology.name}: baseline for {BASELINE_TICKS} ticks")
        baseline = _baseline(box)
        for kind, target in KIND_TARGETS.items():
            figures: dict[str, Any] = {"target": target, "faults": {}}
            faults = [*EVERY_KIND] + ([Fault.DISK_FULL] if _has_disk(box, target) else [])
            for fault in faults:
                log(f"{kind}: {fault.label} on {target}")
                box.reset([0])
                figures["faults"][fault.label] = measure_fault(box, fault, target)
            if _has_disk(box, target):
                log(f"{kind}: how long users are served with the disk of {target} full")
                figures["full_disk"] = _full_disk(box, target)
            log(f"{kind}: the CPU of its new processes")
            box.reset([0])
            figures["starts"] = measure_starts(box, target)
            where = KIND_RECREATE_TARGETS.get(kind, target)
            log(f"{kind}: recreate of {where}")
            box.reset([0])
            if _has_disk(box, where):
                figures["restore"] = _restore(box, where)
            else:
                figures["recreate"] = _repair_only(box, where, Repair.RECREATE)
            kinds[kind] = figures
    finally:
        box.close()
    return {"topology": topology.name, "baseline": baseline, "kinds": kinds}


def _full_disk(box: DockerSandbox, target: str) -> dict[str, Any]:
    """How long ``target``'s users are served once its disk is full, by when the disk filled: the
    ticks from the fill until the first failed user request, FULL_DISK_REPEATS times for each of
    FULL_DISK_AFTER, watched for FULL_DISK_WATCH_TICKS."""
    served = {
        str(after): [served_with_full_disk(box, target, after) for _ in range(FULL_DISK_REPEATS)]
        for after in FULL_DISK_AFTER
    }
    return {"target": target, "served_ticks": served, "watched_ticks": FULL_DISK_WATCH_TICKS}


def served_with_full_disk(box: Sandbox, target: str, after: int) -> int:
    """Fill ``target``'s disk ``after`` ticks after a reset; the ticks its users are still served.
    Any sandbox: the simulator, run the same way, must serve as long (a test holds it)."""
    box.reset([0])
    for _ in range(after):
        box.advance()
    box.inject(np.array([box.topology.index[target]]), np.array([Fault.DISK_FULL]))
    for tick in range(FULL_DISK_WATCH_TICKS):
        box.advance()
        if not box.slo[0]:
            return tick
    return FULL_DISK_WATCH_TICKS


def measure_starts(box: Sandbox, target: str, repeats: int = START_REPEATS) -> dict[str, list[list[float]]]:
    """``target``'s CPU in the two readings after each of ``repeats`` restarts of a killed process
    and as many of a live one. A new container's first reading has nothing to rate its CPU
    counter against (0); the second is what its start-up burned since. Any sandbox."""
    slot = np.array([box.topology.index[target]])
    readings: dict[str, list[list[float]]] = {"kill": [], "live": []}
    for how, seen in readings.items():
        for _ in range(repeats):
            for _ in range(START_SETTLE_TICKS):
                box.advance()
            if how == "kill":
                box.inject(slot, np.array([Fault.KILL]))
                box.advance()
            box.repair(slot, np.array([Repair.RESTART]))
            cpu = []
            for _ in range(2):
                box.advance()
                cpu.append(round(float(box.observe()[0, slot[0], Feature.CPU]), 4))
            seen.append(cpu)
    return readings


def start_cpu(starts: dict[str, list[list[float]]]) -> list[float]:
    """The range a new process's CPU reads in its second reading (``sim.SimParams.start_cpu``):
    the 10th-90th percentile of every restart's, killed and live."""
    second = [cpu[1] for seen in starts.values() for cpu in seen]
    return [round(float(np.percentile(second, 10)), 3), round(float(np.percentile(second, 90)), 3)]


def page_ticks(served: dict[str, list[int]]) -> int:
    """A kind's ``page_ticks`` from how long a full disk served: the ticks of writes its first page
    took, counted from the reset's own measurement (the same count ``simkernel.advance`` keeps)."""
    first = min(served, key=int)
    return int(np.median(served[first])) + int(first) + 1


def _has_disk(box: DockerSandbox, service: str) -> bool:
    return bool(box.topology.has_disk[box.topology.index[service]])


def derive_kinds(raw: dict[str, Any]) -> dict[str, Any]:
    """Each kind's profile (``sim.KindProfile`` fields) from its raw figures, as ``derive`` does
    for the generic service: the restart's downtime is the mean over LIVE_RESTARTS; a
    recreate's is its own, less the restore of the data it destroyed; a clean_disk's, where the
    kind has a volume, the ticks until it is healthy again; its page, from how long a full disk
    served, and whether its own check passed meanwhile (``sim.KindProfile.check_in_page``)."""
    profiles = {}
    for kind, m in raw["kinds"].items():
        faults = m["faults"]
        restarts = [faults[f]["repair"]["down_ticks"] for f in LIVE_RESTARTS]
        if "restore" in m:  # it held data: the restore is a rule of the world, not the recreate's own downtime
            recreate = max(0, (m["restore"]["down_ticks"] or 0) - m["restore"]["expected_ticks"])
        else:
            recreate = m["recreate"]["down_ticks"]
        restart = round(float(np.mean(restarts)))
        profile: dict[str, Any] = {"restart_ticks": restart, "recreate_ticks": round(recreate)}
        # A restart after a kill has nothing to stop: the ticks that saves, as measured.
        profile["dead_start_saves"] = max(0, restart - faults["kill"]["repair"]["down_ticks"])
        if "disk_full" in faults:
            profile["clean_disk_ticks"] = faults["disk_full"]["repair"]["down_ticks"]
        if "full_disk" in m:
            profile["page_ticks"] = page_ticks(m["full_disk"]["served_ticks"])
            # Healthy at all with its disk full: its check wrote into the page, not new space.
            profile["check_in_page"] = bool(faults["disk_full"]["symptoms"]["healthy"]["max"] > 0)
        profile["start_cpu"] = start_cpu(m["starts"])
        profile["cpu_hog"] = symptoms_from(faults["cpu_hog"]["symptoms"])
        profile["bad_release"] = symptoms_from(faults["bad_deploy"]["symptoms"])
        profile["deploy_ticks"] = deploy_ticks(faults["bad_deploy"])
        profile["memory"] = raw["baseline"]["memory"][m["target"]]
        profile["connections"] = raw["baseline"]["connections"][m["target"]]
        profiles[kind] = profile
    return profiles


def derive(raw: dict[str, Any]) -> dict[str, Any]:
    """SimParams fields from raw measurements (this mapping is what calibration means)."""
    faults, base = raw["faults"], raw["baseline"]
    restarts = [faults[f]["repair"]["down_ticks"] for f in LIVE_RESTARTS]
    return {
        "restart_ticks": round(float(np.mean(restarts))),
        "recreate_ticks": round(raw["recreate"]["down_ticks"]),
        "rate_limit_ticks": faults["net_saturation"]["repair"]["down_ticks"],
        "disk_fill_per_tick": round(min(1.0, faults["disk_full"]["fill_per_tick"]), 3),
        "probe_noise": round(base["false_unhealthy"], 3),
        "start_cpu": start_cpu(raw["starts"]),
        "healthy": symptoms_from(base, healthy=True),
        "paused": symptoms_from(faults["pause"]["symptoms"]),
        "cpu_hog": symptoms_from(faults["cpu_hog"]["symptoms"]),
        "flooded": symptoms_from(faults["net_saturation"]["symptoms"]),
        "bad_release": symptoms_from(faults["bad_deploy"]["symptoms"]),
        "deploy_ticks": deploy_ticks(faults["bad_deploy"]),
        "memory": round(float(np.median(list(base["memory"].values()))), 3),
    }


def deploy_ticks(bad_deploy: dict[str, Any]) -> int:
    """A deploy's downtime: the longer of the bad deploy's own and its rollback's (each a deploy)."""
    return int(max(bad_deploy["deploy_down_ticks"], bad_deploy["repair"]["down_ticks"] or 0))


def symptoms_from(m: dict[str, Any], healthy: bool = False) -> dict[str, Any]:
    """A Symptoms record from measured statistics: the 10th-90th percentile ranges, and how often
    the probe failed and user requests failed or were merely late (none of them when ``healthy``)."""

    def span(key: str, digits: int) -> list[float]:
        return [round(m[key]["p10"], digits), round(max(m[key]["p90"], m[key]["p10"]), digits)]

    def share(key: str, inverse: bool = False) -> float:
        if healthy:
            return 0.0
        return round(1.0 - m[key]["mean"] if inverse else m[key]["mean"], 3)

    return {
        "latency_s": span("latency", 4),
        "cpu": span("cpu", 3),
        "net_rx": span("net_rx", 4),
        "probe_fail": share("healthy", inverse=True),
        "serve_fail": share("failed"),
        "serve_slow": share("slow"),
    }


def _stats(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "p10": float(np.percentile(a, 10)), "p50": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "max": float(a.max())}  # fmt: skip


def _baseline(box: DockerSandbox) -> dict[str, Any]:
    """Healthy symptoms of every service, each service's memory and connections at work (medians),
    and how long a measurement of the whole system takes."""
    lat, cpu, net, measure_ms, unhealthy, total = [], [], [], [], 0, 0
    n = box.topology.n_services
    held: dict[str, list[np.ndarray]] = {"memory": [], "connections": []}
    for _ in range(BASELINE_TICKS):
        box.advance()
        measure_ms.append(1000 * box.measure_s)
        f = box.observe()[0, :n]
        lat += f[:, Feature.LATENCY].tolist()
        cpu += f[:, Feature.CPU].tolist()
        net += f[:, Feature.NET_RX].tolist()
        held["memory"].append(f[:, Feature.MEMORY].copy())
        held["connections"].append(f[:, Feature.CONNECTIONS].copy())
        unhealthy += int((~box.health[0]).sum())
        total += n
    at_work = {
        key: {name: round(float(v), 3) for name, v in zip(box.topology.names, np.median(values, axis=0), strict=True)}
        for key, values in held.items()
    }
    return {"latency": _stats(lat), "cpu": _stats(cpu), "net_rx": _stats(net), "observe_ms": _stats(measure_ms),
            "false_unhealthy": unhealthy / total, **at_work}  # fmt: skip


def measure_fault(box: Sandbox, fault: Fault, target: str) -> dict[str, Any]:
    """Inject, read the target's symptoms for FAULT_TICKS, then repair properly and time recovery.
    Any sandbox: a test reads the simulator's symptoms the same way."""
    slot = box.topology.index[target]
    box.advance()
    before = float(box.observe()[0, slot, Feature.DISK_USED])
    start = time.monotonic()
    box.inject(np.array([slot]), np.array([fault]))
    inject_ms = 1000 * (time.monotonic() - start)
    deploy_down = _until_started(box, slot) if fault == Fault.BAD_DEPLOY else 0
    symptoms: dict[str, list[float]] = {
        key: [] for key in ("latency", "cpu", "net_rx", "healthy", "slo", "failed", "slow", "error", "disk")
    }
    for _ in range(FAULT_TICKS):
        box.advance()
        f = box.observe()[0, slot]
        symptoms["latency"].append(float(f[Feature.LATENCY]))
        symptoms["cpu"].append(float(f[Feature.CPU]))
        symptoms["net_rx"].append(float(f[Feature.NET_RX]))
        symptoms["disk"].append(float(f[Feature.DISK_USED]))
        symptoms["error"].append(float(f[Feature.ERROR_RATE]))
        symptoms["healthy"].append(float(box.health[0, slot]))
        symptoms["slo"].append(float(box.slo[0]))
        # The SLO missed: failed where the target's own requests failed, late where they were answered.
        failed = not box.slo[0] and f[Feature.ERROR_RATE] >= FAILED_ERROR_RATE
        symptoms["failed"].append(float(failed))
        symptoms["slow"].append(float(not box.slo[0] and not failed))
    first_disk = symptoms["disk"][0]
    result: dict[str, Any] = {
        "target": target,
        "inject_ms": inject_ms,
        "symptoms": {k: _stats(v) for k, v in symptoms.items()},
        "fill_per_tick": (first_disk - before) / max(1e-9, 1.0 - before),
        "deploy_down_ticks": deploy_down,
    }
    result["repair"] = _repair_only(box, target, PROPER_REPAIR[fault])
    return result


def _until_started(box: Sandbox, slot: int) -> int:
    """Ticks a deploy kept the service from running; then one tick more, the new process's first
    reading (its counters start anew), so that what is measured next is the release's own."""
    down = 0
    while down < DEPLOY_WATCH_TICKS:
        box.advance()
        if box.observe()[0, slot, Feature.RUNNING] > 0.5:
            break
        down += 1
    box.advance()
    return down


def _repair_only(box: Sandbox, target: str, repair: Repair) -> dict[str, Any]:
    """Apply ``repair`` to ``target``; its duration, and ticks until the target is up and healthy."""
    slot = box.topology.index[target]
    box.advance()
    start = time.monotonic()
    box.repair(np.array([slot]), np.array([repair]))
    duration = time.monotonic() - start
    down = RECOVERY_TICKS
    slo_ticks = RECOVERY_TICKS
    for tick in range(RECOVERY_TICKS):
        box.advance()
        up = box.observe()[0, slot, Feature.RUNNING] > 0.5 and box.health[0, slot]
        if up and down == RECOVERY_TICKS:
            down = tick
        if box.slo[0] and slo_ticks == RECOVERY_TICKS:
            slo_ticks = tick
    return {"repair": repair.label, "duration_s": duration, "down_ticks": down, "slo_ticks": slo_ticks}


def _restore(box: DockerSandbox, target: str) -> dict[str, Any]:
    """Recreate ``target`` (it holds data); the ticks its restore should take and did, and its data
    before and after."""
    slot, spec = box.topology.index[target], box.topology.services[box.topology.index[target]]
    box.advance()
    before = restore.data_size(box.name, spec)
    box.repair(np.array([slot]), np.array([Repair.RECREATE]))
    expected = restore.restore_ticks(before, spec)
    down = None
    for tick in range(expected + RESTORE_SLACK_TICKS):
        box.advance()
        if box.health[0, slot]:
            down = tick
            break
    return {"data_bytes": before, "restored_bytes": restore.data_size(box.name, spec), "expected_ticks": expected,
            "down_ticks": down}  # fmt: skip


def _cascade(box: DockerSandbox) -> dict[str, Any]:
    """Ticks from a kill of db until api, then gateway, read unhealthy."""
    idx = box.topology.index
    box.advance()
    box.inject(np.array([idx["db"]]), np.array([Fault.KILL]))
    seen: dict[str, int] = {}
    for tick in range(6):
        box.advance()
        for name in ("db", "api", "gateway"):
            if name not in seen and not box.health[0, idx[name]]:
                seen[name] = tick
    return {"unhealthy_at_tick": seen}
