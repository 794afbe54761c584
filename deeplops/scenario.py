"""Scripted failure drills: load and validate ``scenarios/*.yaml``, and play them as a chaos policy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deeplops import bounds
from deeplops.actions import Observation, Role, chaos_action
from deeplops.bounds import shown, shown_keys
from deeplops.catalog import data_dir, read_yaml, resolve_env
from deeplops.errors import ConfigError, ScenarioError
from deeplops.faults import FAULTS_NEEDING_DATABASE, FAULTS_NEEDING_DISK, FAULTS_NEEDING_OWN_CODE, Fault
from deeplops.game import GameConfig
from deeplops.observation import MAX_SLOTS
from deeplops.topology import CODE_KINDS, Topology, load_topology

_KEYS = {"name", "description", "env", "ticks", "seed", "faults", "expect"}
_FAULT_KEYS = {"at", "fault", "target"}
_EXPECT_KEYS = {"availability", "slo_at_end", "healthy_at_end"}


@dataclass(frozen=True)
class ScheduledFault:
    """One fault of a drill."""

    at: int
    """Tick at which the chaos side injects it (0-based); faults on several services may share one
    (a correlated failure), injected together before the order side acts."""
    fault: Fault
    """What to inject."""
    target: str
    """Service it hits."""


@dataclass(frozen=True)
class Expectation:
    """A drill's steady-state hypothesis: what must hold when it has been played."""

    availability: float | None = None
    """Availability over the drill at least this."""
    slo_at_end: bool | None = None
    """The SLO holds (True) or fails (False) on the last tick."""
    healthy_at_end: tuple[str, ...] = ()
    """Services healthy on the last tick."""

    def __bool__(self) -> bool:
        return self.availability is not None or self.slo_at_end is not None or bool(self.healthy_at_end)

    def check(self, availability: float, last: dict[str, Any]) -> list[tuple[str, bool]]:
        """Each clause as (text, met), given the drill's availability and its last trace row."""
        checks = []
        if self.availability is not None:
            checks.append((f"availability >= {self.availability}", availability >= self.availability))
        if self.slo_at_end is not None:
            checks.append((f"SLO {'ok' if self.slo_at_end else 'failing'} at the end", last["slo"] == self.slo_at_end))
        for service in self.healthy_at_end:
            checks.append((f"{service} healthy at the end", bool(last["health"].get(service))))
        return checks

    def to_dict(self) -> dict[str, Any]:
        """As the scenario file's ``expect`` mapping."""
        out: dict[str, Any] = {}
        if self.availability is not None:
            out["availability"] = self.availability
        if self.slo_at_end is not None:
            out["slo_at_end"] = self.slo_at_end
        if self.healthy_at_end:
            out["healthy_at_end"] = list(self.healthy_at_end)
        return out


@dataclass(frozen=True)
class Scenario:
    """A named failure drill: a topology, a fault timeline, and what must hold."""

    name: str
    """Name of the drill."""
    topology: Topology
    """The system it runs on."""
    ticks: int
    """Length of the drill in ticks."""
    seed: int
    """Seed of the system's randomness (probe noise, jitter)."""
    faults: tuple[ScheduledFault, ...]
    """The faults, in tick order (those of one tick in the order given)."""
    expect: Expectation = Expectation()
    """Steady-state hypothesis, checked on replay."""
    description: str = ""
    """The real incident pattern the drill models."""

    def game_config(self) -> GameConfig:
        """Rules for playing the drill: its length, and no budget in the way of the script."""
        return GameConfig(max_ticks=self.ticks, budget=float("inf"), max_concurrent=MAX_SLOTS)


def shipped_scenarios() -> list[Path]:
    """The scenario files shipped under ``scenarios/``."""
    return sorted(data_dir("scenarios").glob("*.yaml"))


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario file; every problem found is named in one ScenarioError."""
    path = Path(path)
    doc = read_yaml(path, ScenarioError, "a scenario YAML file")
    if not isinstance(doc, dict):
        raise ScenarioError(f"{path}: expected a mapping with name, env, ticks and faults, got a {type(doc).__name__}")
    if not set(doc) & _KEYS:  # not a scenario at all: name none of its keys, which may be its content
        raise ScenarioError(f"{path}: expected a mapping with name, env, ticks and faults, got one with none of them")
    problems: list[str] = []
    unknown = set(doc) - _KEYS
    if unknown:
        problems.append(f"unknown key(s) {shown_keys(unknown)}: expected {', '.join(sorted(_KEYS))}")
    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not name.isprintable() or not 0 < len(name) <= 64:
        problems.append(f"'name' must be one line of 1 to 64 characters, got {shown(name)}")
    ticks: int | None = None
    seed = 0
    try:
        ticks = bounds.whole(doc.get("ticks"), "'ticks'", 1, bounds.MAX_TICKS, ScenarioError)
    except ScenarioError as exc:
        problems.append(str(exc))
    try:
        seed = bounds.whole(doc.get("seed", 0), "'seed'", 0, bounds.MAX_SEED, ScenarioError)
    except ScenarioError as exc:
        problems.append(str(exc))
    topology = None
    env = doc.get("env", "shop")
    if not isinstance(env, str) or not env:
        problems.append(f"'env' must be a topology name or path, got {shown(env)}")
    else:
        try:
            topology = load_topology(resolve_env(env, relative_to=path.parent))
        except ConfigError as exc:
            problems.append(f"env: {exc}")
    faults = _faults(doc.get("faults", []), topology, ticks, problems)
    expect = _expect(doc.get("expect"), topology, problems)
    description = doc.get("description", "")
    if not isinstance(description, str):
        problems.append(f"'description' must be a string, got {shown(description)}")
    if problems:
        raise ScenarioError(f"{path}: " + "; ".join(problems))
    assert topology is not None and ticks is not None
    return Scenario(name, topology, ticks, seed, faults, expect, description)


def _faults(raw: Any, topology: Topology | None, ticks: int | None, problems: list[str]) -> tuple[ScheduledFault, ...]:
    if not isinstance(raw, list):
        problems.append(f"'faults' must be a list of {{at, fault, target}}, got {shown(raw)}")
        return ()
    out: list[ScheduledFault] = []
    seen: dict[tuple[int, str], str] = {}  # (tick, target): the first fault there, as named in problems
    for i, item in enumerate(raw):
        where = f"faults[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected a mapping {{at, fault, target}}, got {shown(item)}")
            continue
        unknown = set(item) - _FAULT_KEYS
        if unknown:
            problems.append(f"{where}: unknown key(s) {shown_keys(unknown)}: expected at, fault, target")
        at = item.get("at")
        if isinstance(at, bool) or not isinstance(at, int) or at < 0 or (ticks is not None and at >= ticks):
            problems.append(
                f"{where}: 'at' must be a tick in [0, {ticks if ticks is not None else 'ticks'}), got {shown(at)}"
            )
            continue
        try:
            fault = Fault.parse(item.get("fault"), ScenarioError)
        except ScenarioError as exc:
            problems.append(f"{where}: {exc}")
            continue
        target = item.get("target")
        if not isinstance(target, str):
            problems.append(f"{where}: 'target' must be a service name, got {shown(target)}")
            continue
        if topology is not None:
            if target not in topology.index:
                names = ", ".join(topology.names)
                problems.append(f"{where}: unknown service {shown(target)}: expected one of {names}")
                continue
            slot = topology.index[target]
            if fault in FAULTS_NEEDING_DISK and not topology.has_disk[slot]:
                need = f"{fault.label} needs a service with a data volume (disk_mb)"
                problems.append(f"{where}: {need}, {target!r} has none")
                continue
            if fault in FAULTS_NEEDING_OWN_CODE and not topology.own_code[slot]:
                need = f"{fault.label} needs a service running our own program ({', '.join(CODE_KINDS)})"
                problems.append(f"{where}: {need}, {target!r} runs {topology.kinds[slot]}")
                continue
            if fault in FAULTS_NEEDING_DATABASE and topology.leaks_at[slot] < 0:
                need = f"{fault.label} needs a client of a PostgreSQL server (an app or a worker that uses one)"
                problems.append(f"{where}: {need}, {target!r} is a {topology.kinds[slot]} that uses none")
                continue
        first = seen.get((at, target))
        if first is not None:
            problems.append(
                f"{first} and {where} ({fault.label}) both hit {target!r} at tick {at}: expected at most one "
                "fault per service and tick"
            )
            continue
        seen[at, target] = f"{where} ({fault.label})"
        out.append(ScheduledFault(at=at, fault=fault, target=str(target)))
    return tuple(sorted(out, key=lambda f: f.at))


def _expect(raw: Any, topology: Topology | None, problems: list[str]) -> Expectation:
    if raw is None:
        return Expectation()
    if not isinstance(raw, dict) or set(raw) - _EXPECT_KEYS:
        what = f"unknown key(s) {shown_keys(set(raw) - _EXPECT_KEYS)}" if isinstance(raw, dict) else shown(raw)
        problems.append(f"'expect' must be a mapping with {', '.join(sorted(_EXPECT_KEYS))}, got {what}")
        return Expectation()
    value = raw.get("availability")
    if value is not None:
        try:
            value = bounds.number(value, "'expect.availability'", 0.0, 1.0, ScenarioError)
        except ScenarioError as exc:
            problems.append(str(exc))
            value = None
    slo = raw.get("slo_at_end")
    if slo is not None and not isinstance(slo, bool):
        problems.append(f"'expect.slo_at_end' must be true or false, got {shown(slo)}")
        slo = None
    healthy = raw.get("healthy_at_end", [])
    known = topology.index if topology is not None else None
    bad = (
        [h for h in healthy if not isinstance(h, str) or (known is not None and h not in known)]
        if isinstance(healthy, list)
        else [healthy]
    )
    if bad:
        names = ", ".join(topology.names) if topology is not None else "the topology's services"
        problems.append(f"'expect.healthy_at_end' must list services among {names}, got {shown(bad[0])}")
        healthy = []
    return Expectation(value, slo, tuple(healthy))


class ScriptedChaos:
    """The chaos side of a drill: injects each scheduled fault at its tick, in every env.

    ``act`` plays the first fault of a tick, as any chaos policy acts; ``extra_actions`` gives the
    others scheduled at that tick, for ``Game.step``'s ``extra_chaos``."""

    role = Role.CHAOS
    privileged = False

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.name = f"scenario:{scenario.name}"
        index = scenario.topology.index
        by_tick: dict[int, list[int]] = {}
        for f in scenario.faults:
            by_tick.setdefault(f.at, []).append(chaos_action(index[f.target], f.fault))
        self._script = {at: actions[0] for at, actions in by_tick.items()}
        self._more = {at: np.array(actions[1:], np.int64) for at, actions in by_tick.items() if len(actions) > 1}
        self._tick = 0
        self._extra: np.ndarray | None = None

    def reset(self, n_envs: int, seed: int | None = None) -> None:
        """Back to tick 0."""
        self._tick = 0
        self._extra = None

    def act(self, obs: Observation, mask: np.ndarray) -> np.ndarray:
        """The (first) fault scheduled for this tick, or noop."""
        n_envs = mask.shape[0]
        more = self._more.get(self._tick)
        self._extra = None if more is None else np.tile(more, (n_envs, 1))
        action = self._script.get(self._tick, 0)
        self._tick += 1
        return np.full(n_envs, action, np.int64)

    def extra_actions(self) -> np.ndarray | None:
        """The other faults scheduled for the tick ``act`` last played, as ``(n_envs, k)`` chaos
        actions (``Game.step``'s ``extra_chaos``); None when it has none."""
        return self._extra
