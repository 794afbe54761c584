"""Chaos Toolkit experiments as deeplops drills, and back.

Reading: the method's ``inject_fault`` actions, at the time its pauses have reached (one tick a
second, rounded), become the fault timeline, so injections with no pause between them are one
tick's correlated failure (on distinct services; ``to_experiment`` writes a tick's faults so);
its ``repair`` actions are left to the policy under test; the steady-state hypothesis's
``slo_ok`` and ``service_healthy`` probes become what must hold at the end. A ``deeplops``
extension may carry the env, ticks, seed and an availability expectation. Anything else is an
activity deeplops cannot map, and an error.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from deeplops import bounds
from deeplops.bounds import shown, shown_keys
from deeplops.catalog import MAX_DOCUMENT_BYTES, parse_json, read_text, resolve_env
from deeplops.errors import ConfigError, ScenarioError
from deeplops.faults import Fault
from deeplops.scenario import Expectation, Scenario, ScheduledFault
from deeplops.topology import load_topology
from deeplops.version import VERSION

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
    expected = "a Chaos Toolkit experiment (JSON)"
    text = read_text(path, ScenarioError, expected, MAX_DOCUMENT_BYTES)
    doc = parse_json(text, ScenarioError, str(path), expected)
    if not isinstance(doc, dict) or not isinstance(doc.get("method"), list):
        raise ScenarioError(f"{path}: expected a Chaos Toolkit experiment with a 'method' list")
    extensions = doc.get("extensions", [])
    if not isinstance(extensions, list):
        raise ScenarioError(f"{path}: 'extensions' must be a list of objects, got {shown(extensions)}")
    ext = next((e for e in extensions if isinstance(e, dict) and e.get("name") == "deeplops"), {})
    configuration = doc.get("configuration", {})
    if not isinstance(configuration, dict):
        raise ScenarioError(f"{path}: 'configuration' must be an object, got {shown(configuration)}")
    config = {k: v for k, v in configuration.items() if isinstance(v, str)}
    env_ref = env if env is not None else ext.get("env", "shop")
    if not isinstance(env_ref, str | Path) or not str(env_ref):
        raise ScenarioError(f"{path}: the deeplops extension's 'env' must be a topology name or path, "
                            f"got {shown(env_ref)}")  # fmt: skip
    try:
        topology = load_topology(env if env is not None else resolve_env(str(env_ref), path.parent))
    except ConfigError as exc:
        raise ScenarioError(f"{path}: the experiment's env: {exc}") from None
    faults: list[ScheduledFault] = []
    clock = 0.0
    for i, activity in enumerate(doc["method"]):
        where = f"{path}: method[{i}]"
        if not isinstance(activity, dict):
            raise ScenarioError(f"{where}: expected an action or probe object, got {shown(activity)}")
        where += f" {shown(activity.get('name', ''))}"
        clock += _pause(where, activity, "before")
        func = _func(where, activity)
        if func == f"{ACTIONS}.inject_fault":
            args = _arguments(where, activity, config, ("fault", "target"))
            fault = _parse_fault(where, args["fault"])
            if not isinstance(args["target"], str) or args["target"] not in topology.index:
                raise ScenarioError(f"{where}: unknown service {shown(args['target'])}: expected one of "
                                    f"{', '.join(topology.names)}")  # fmt: skip
            at = round(clock)
            same = next((f for f in faults if f.at == at and f.target == args["target"]), None)
            if same is not None:
                raise ScenarioError(
                    f"{where}: {fault.label} on {args['target']!r} at tick {at}, where {same.fault.label} already "
                    "hits it (no pause between them): expected at most one fault per service and tick"
                )
            faults.append(ScheduledFault(at, fault, args["target"]))
        elif func != f"{ACTIONS}.repair" and not func.startswith(f"{PROBES}."):
            raise ScenarioError(
                f"{where}: deeplops cannot map {func}: expected {ACTIONS}.inject_fault or .repair, or a {PROBES} probe"
            )
        clock += _pause(where, activity, "after")
        if clock > bounds.MAX_TICKS:
            raise ScenarioError(f"{where}: its pauses reach {clock:.0f} s, past the longest drill "
                                f"({bounds.MAX_TICKS} ticks of a second)")  # fmt: skip
    ticks = ext.get("ticks", max(math.ceil(clock), (faults[-1].at + TAIL_TICKS) if faults else TAIL_TICKS))
    ticks = bounds.whole(ticks, f"{path}: the deeplops extension's 'ticks'", 1, bounds.MAX_TICKS, ScenarioError)
    if faults and faults[-1].at >= ticks:
        raise ScenarioError(f"{path}: a fault at tick {faults[-1].at} is past the drill's {ticks} ticks")
    seed = bounds.whole(ext.get("seed", 0), f"{path}: the deeplops extension's 'seed'", 0, bounds.MAX_SEED,
                        ScenarioError)  # fmt: skip
    expect = _hypothesis(path, doc.get("steady-state-hypothesis"), config, ext.get("expect", {}), topology.index)
    name, description = doc.get("title") or path.stem, doc.get("description", "")
    if not isinstance(name, str) or not isinstance(description, str):
        raise ScenarioError(f"{path}: 'title' and 'description' must be strings, got {shown(name)} and "
                            f"{shown(description)}")  # fmt: skip
    return Scenario(name[:64], topology, ticks, seed, tuple(faults), expect, description)


def _func(where: str, activity: dict[str, Any]) -> str:
    provider = activity.get("provider")
    if not isinstance(provider, dict) or provider.get("type") != "python":
        raise ScenarioError(f"{where}: deeplops cannot map a {_kind(provider)} provider: expected a python provider "
                            f"of {ACTIONS} or {PROBES}")  # fmt: skip
    module, func = provider.get("module"), provider.get("func")
    if not isinstance(module, str) or not isinstance(func, str):
        raise ScenarioError(f"{where}: a python provider needs 'module' and 'func' strings, got {shown(module)} and "
                            f"{shown(func)}")  # fmt: skip
    return f"{module}.{func}"[:120]


def _kind(provider: Any) -> str:
    return shown(provider.get("type")) if isinstance(provider, dict) else "missing"


def _arguments(where: str, activity: dict[str, Any], config: dict[str, str], needed: tuple[str, ...]) -> dict[str, Any]:
    args = activity["provider"].get("arguments", {})
    if not isinstance(args, dict) or any(k not in args for k in needed):
        given = (", ".join(sorted(map(shown, args))) or "none") if isinstance(args, dict) else shown(args)
        raise ScenarioError(f"{where}: expected arguments {', '.join(needed)}, got {given}")
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
    if not isinstance(pauses, dict):
        raise ScenarioError(f"{where}: 'pauses' must be an object with before and after, got {shown(pauses)}")
    return bounds.number(pauses.get(when, 0), f"{where}: pauses.{when} (seconds)", 0.0, bounds.MAX_TICKS,
                         ScenarioError)  # fmt: skip


def _hypothesis(path: Path, raw: Any, config: dict[str, str], extra: Any, services: dict[str, int]) -> Expectation:
    if not isinstance(extra, dict) or set(extra) - {"availability"}:
        given = shown_keys(set(extra)) if isinstance(extra, dict) else shown(extra)
        raise ScenarioError(f"{path}: the deeplops extension's 'expect' must be {{availability: X}}, got {given}")
    availability = extra.get("availability")
    if availability is not None:
        availability = bounds.number(availability, f"{path}: the deeplops extension's 'expect.availability'", 0.0,
                                     1.0, ScenarioError)  # fmt: skip
    slo: bool | None = None
    healthy: list[str] = []
    if raw is not None and not isinstance(raw, dict):
        raise ScenarioError(f"{path}: 'steady-state-hypothesis' must be an object, got {shown(raw)}")
    probes = raw.get("probes", []) if isinstance(raw, dict) else []
    if not isinstance(probes, list):
        raise ScenarioError(f"{path}: steady-state-hypothesis 'probes' must be a list, got {shown(probes)}")
    for i, probe in enumerate(probes):
        where = f"{path}: steady-state-hypothesis probes[{i}]"
        if not isinstance(probe, dict):
            raise ScenarioError(f"{where}: expected a probe object, got {shown(probe)}")
        where += f" {shown(probe.get('name', ''))}"
        func = _func(where, probe)
        tolerance = probe.get("tolerance")
        if func == f"{PROBES}.slo_ok" and isinstance(tolerance, bool):
            slo = tolerance
        elif func == f"{PROBES}.service_healthy" and tolerance is True:
            target = _arguments(where, probe, config, ("target",))["target"]
            if not isinstance(target, str) or target not in services:
                raise ScenarioError(f"{where}: unknown service {shown(target)}: expected one of {', '.join(services)}")
            healthy.append(target)
        else:
            raise ScenarioError(
                f"{where}: deeplops cannot map {func} with tolerance {shown(tolerance)}: expected {PROBES}.slo_ok "
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
            "pauses": {"before": f.at - last} if f.at > last else {},  # a tick's faults: no pause between
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
        "extensions": [{**extension, "exported_by": f"deeplops {VERSION}"}],
        "method": method,
        "rollbacks": [],
    }
    if probes:
        experiment["steady-state-hypothesis"] = {"title": f"{scenario.name} holds", "probes": probes}
    return experiment


def _probe(name: str, func: str, arguments: dict[str, Any], tolerance: bool) -> dict[str, Any]:
    return {"type": "probe", "name": name, "tolerance": tolerance,
            "provider": {"type": "python", "module": PROBES, "func": func, "arguments": arguments}}  # fmt: skip
