"""Chaos Toolkit experiments as deeplops drills, and back.

Reading: the method's ``inject_fault`` actions, at the time its pauses have reached (one tick a
second), become the fault timeline; its ``repair`` actions are left to the policy under test; the
steady-state hypothesis's ``slo_ok`` and ``service_healthy`` probes become what must hold at the
end. A ``deeplops`` extension may carry the env, ticks, seed and an availability expectation.
Anything else is an activity deeplops cannot map, and an error.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from deeplops import __version__
from deeplops.catalog import resolve_env
from deeplops.errors import ConfigError, ScenarioError
from deeplops.faults import Fault
from deeplops.scenario import Expectation, Scenario, ScheduledFault
from deeplops.topology import load_topology

ACTIONS = "deeplops.chaostoolkit.actions"
PROBES = "deeplops.chaostoolkit.probes"
SANDBOX_VAR = "deeplops_sandbox"
"""Configuration key naming the live sandbox; read from the DEEPLOPS_SANDBOX environment variable."""
TAIL_TICKS = 30
"""Ticks played after the last fault when an experiment says nothing of its length."""
_VAR = re.compile(r"^\$\{(\w+)\}$")


def read_experiment(path: str | Path, env: str | Path | None = None) -> Scenario:
    """The drill an experiment file describes; ScenarioError names the first thing that cannot map."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the experiment ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ScenarioError(
            f"{path}: not JSON ({exc.msg}, line {exc.lineno}): expected a Chaos Toolkit experiment"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("method"), list):
        raise ScenarioError(f"{path}: expected a Chaos Toolkit experiment with a 'method' list")
    ext = next((e for e in doc.get("extensions", []) if isinstance(e, dict) and e.get("name") == "deeplops"), {})
    config = {k: v for k, v in doc.get("configuration", {}).items() if isinstance(v, str)}
    try:
        topology = load_topology(env if env is not None else resolve_env(ext.get("env", "shop"), path.parent))
    except ConfigError as exc:
        raise ScenarioError(f"{path}: the experiment's env: {exc}") from None
    faults: list[ScheduledFault] = []
    clock = 0.0
    for i, activity in enumerate(doc["method"]):
        where = f"{path}: method[{i}]"
        if not isinstance(activity, dict):
            raise ScenarioError(f"{where}: expected an action or probe object, got {activity!r:.60}")
        where += f" {activity.get('name', '')!r}"
        clock += _pause(where, activity, "before")
        func = _func(where, activity)
        if func == f"{ACTIONS}.inject_fault":
            args = _arguments(where, activity, config, ("fault", "target"))
            fault = _parse_fault(where, args["fault"])
            if args["target"] not in topology.index:
                raise ScenarioError(f"{where}: unknown service {args['target']!r}: expected one of "
                                    f"{', '.join(topology.names)}")  # fmt: skip
            at = max(round(clock), faults[-1].at + 1 if faults else 0)  # the chaos side acts once per tick
            faults.append(ScheduledFault(at, fault, args["target"]))
        elif func != f"{ACTIONS}.repair" and not func.startswith(f"{PROBES}."):
            raise ScenarioError(
                f"{where}: deeplops cannot map {func}: expected {ACTIONS}.inject_fault or .repair, or a {PROBES} probe"
            )
        clock += _pause(where, activity, "after")
    ticks = ext.get("ticks", max(math.ceil(clock), (faults[-1].at + TAIL_TICKS) if faults else TAIL_TICKS))
    if isinstance(ticks, bool) or not isinstance(ticks, int) or ticks < 1:
        raise ScenarioError(f"{path}: the deeplops extension's 'ticks' must be a whole number >= 1, got {ticks!r}")
    if faults and faults[-1].at >= ticks:
        raise ScenarioError(f"{path}: a fault at tick {faults[-1].at} is past the drill's {ticks} ticks")
    seed = ext.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ScenarioError(f"{path}: the deeplops extension's 'seed' must be a whole number >= 0, got {seed!r}")
    expect = _hypothesis(path, doc.get("steady-state-hypothesis"), config, ext.get("expect", {}), topology.index)
    name = str(doc.get("title") or path.stem)
    return Scenario(name, topology, ticks, seed, tuple(faults), expect, str(doc.get("description", "")))


def _func(where: str, activity: dict[str, Any]) -> str:
    provider = activity.get("provider")
    if not isinstance(provider, dict) or provider.get("type") != "python":
        raise ScenarioError(f"{where}: deeplops cannot map a {_kind(provider)} provider: expected a python provider "
                            f"of {ACTIONS} or {PROBES}")  # fmt: skip
    return f"{provider.get('module')}.{provider.get('func')}"


def _kind(provider: Any) -> str:
    return repr(provider.get("type")) if isinstance(provider, dict) else "missing"


def _arguments(where: str, activity: dict[str, Any], config: dict[str, str], needed: tuple[str, ...]) -> dict[str, Any]:
    args = activity["provider"].get("arguments", {})
    if not isinstance(args, dict) or any(k not in args for k in needed):
        raise ScenarioError(f"{where}: expected arguments {', '.join(needed)}, got {args!r:.60}")
    out = {}
    for key, value in args.items():
        match = _VAR.match(value) if isinstance(value, str) else None
        if match and key in needed:
            if match.group(1) not in config:
                raise ScenarioError(f"{where}: argument {key} is ${{{match.group(1)}}}, which the configuration "
                                    "does not give as a plain string")  # fmt: skip
            value = config[match.group(1)]
        out[key] = value
    return out


def _parse_fault(where: str, text: Any) -> Fault:
    try:
        return Fault.parse(text, ScenarioError)
    except ScenarioError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def _pause(where: str, activity: dict[str, Any], when: str) -> float:
    pauses = activity.get("pauses", {})
    value = pauses.get(when, 0) if isinstance(pauses, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ScenarioError(f"{where}: pauses.{when} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _hypothesis(path: Path, raw: Any, config: dict[str, str], extra: Any, services: dict[str, int]) -> Expectation:
    if not isinstance(extra, dict) or set(extra) - {"availability"}:
        raise ScenarioError(f"{path}: the deeplops extension's 'expect' must be {{availability: X}}, got {extra!r:.60}")
    availability = extra.get("availability")
    slo: bool | None = None
    healthy: list[str] = []
    probes = raw.get("probes", []) if isinstance(raw, dict) else []
    for i, probe in enumerate(probes):
        where = (
            f"{path}: steady-state-hypothesis probes[{i}] {probe.get('name', '') if isinstance(probe, dict) else ''!r}"
        )
        if not isinstance(probe, dict):
            raise ScenarioError(f"{where}: expected a probe object, got {probe!r:.60}")
        func = _func(where, probe)
        tolerance = probe.get("tolerance")
        if func == f"{PROBES}.slo_ok" and isinstance(tolerance, bool):
            slo = tolerance
        elif func == f"{PROBES}.service_healthy" and tolerance is True:
            target = _arguments(where, probe, config, ("target",))["target"]
            if target not in services:
                raise ScenarioError(f"{where}: unknown service {target!r}: expected one of {', '.join(services)}")
            healthy.append(target)
        else:
            raise ScenarioError(
                f"{where}: deeplops cannot map {func} with tolerance {tolerance!r}: expected {PROBES}.slo_ok "
                "(tolerance true or false) or service_healthy (tolerance true)"
            )
    return Expectation(availability, slo, tuple(healthy))


def to_experiment(scenario: Scenario, env: str | None = None) -> dict[str, Any]:
    """The drill as a Chaos Toolkit experiment that ``chaos run`` plays against a live sandbox
    (named by the DEEPLOPS_SANDBOX environment variable) and ``read_experiment`` reads back."""
    sandbox = "${" + SANDBOX_VAR + "}"
    method: list[dict[str, Any]] = []
    last = 0
    for k, f in enumerate(scenario.faults):
        method.append({
            "type": "action",
            "name": f"inject-{f.fault.label}-{f.target}-{k}",
            "provider": {"type": "python", "module": ACTIONS, "func": "inject_fault",
                         "arguments": {"fault": f.fault.label, "target": f.target, "sandbox": sandbox}},
            "pauses": {"before": f.at - last},
        })  # fmt: skip
        last = f.at
    if method:
        method[-1]["pauses"]["after"] = scenario.ticks - last
    probes: list[dict[str, Any]] = []
    if scenario.expect.slo_at_end is not None:
        probes.append(_probe("slo-ok", "slo_ok", {"sandbox": sandbox}, scenario.expect.slo_at_end))
    for service in scenario.expect.healthy_at_end:
        probes.append(_probe(f"{service}-healthy", "service_healthy", {"target": service, "sandbox": sandbox}, True))
    extension: dict[str, Any] = {"name": "deeplops", "env": env or scenario.topology.name,
                                 "ticks": scenario.ticks, "seed": scenario.seed}  # fmt: skip
    if scenario.expect.availability is not None:
        extension["expect"] = {"availability": scenario.expect.availability}
    experiment: dict[str, Any] = {
        "version": "1.0.0",
        "title": scenario.name,
        "description": scenario.description or f"deeplops drill {scenario.name}",
        "tags": ["deeplops", scenario.topology.name],
        "configuration": {SANDBOX_VAR: {"type": "env", "key": "DEEPLOPS_SANDBOX", "default": "deeplops-drill"}},
        "extensions": [{**extension, "exported_by": f"deeplops {__version__}"}],
        "method": method,
        "rollbacks": [],
    }
    if probes:
        experiment["steady-state-hypothesis"] = {"title": f"{scenario.name} holds", "probes": probes}
    return experiment


def _probe(name: str, func: str, arguments: dict[str, Any], tolerance: bool) -> dict[str, Any]:
    return {"type": "probe", "name": name, "tolerance": tolerance,
            "provider": {"type": "python", "module": PROBES, "func": func, "arguments": arguments}}  # fmt: skip
