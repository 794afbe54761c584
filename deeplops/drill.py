"""Drills: any replayable file (scenario YAML, recorded trace, Chaos Toolkit experiment) as a
Scenario, played against one or more order policies with its hypothesis checked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deeplops.actions import Policy
from deeplops.errors import ScenarioError
from deeplops.evaluate import Match, play
from deeplops.faults import Fault
from deeplops.metrics import Summary, summarize
from deeplops.scenario import Expectation, Scenario, ScheduledFault, ScriptedChaos, load_scenario
from deeplops.sim import SimParams
from deeplops.trace import Trace, TraceRecorder, read_trace

KINDS = {".yaml": "scenario", ".yml": "scenario", ".jsonl": "trace", ".json": "chaostoolkit"}
"""What a drill file is, by its suffix."""


def load_drill(path: str | Path, env: str | Path | None = None) -> Scenario:
    """The drill in ``path``: a scenario (.yaml), a trace (.jsonl) or a Chaos Toolkit experiment (.json).

    ``env`` plays a trace or experiment on another topology (a scenario names its own).
    """
    path = Path(path)
    kind = KINDS.get(path.suffix)
    if kind is None:
        raise ScenarioError(
            f"{path}: expected a scenario (.yaml), a trace (.jsonl) or a Chaos Toolkit experiment (.json), "
            f"got {path.suffix or 'no extension'}"
        )
    if not path.is_file():
        raise ScenarioError(f"{path}: file not found: expected a {kind} file")
    if kind == "scenario":
        if env is not None:
            raise ScenarioError(f"{path}: --env applies to traces and experiments; a scenario names its own env")
        return load_scenario(path)
    if kind == "trace":
        return scenario_from_trace(read_trace(path, env))
    from deeplops.chaostoolkit.experiment import read_experiment

    return read_experiment(path, env)


def scenario_from_trace(trace: Trace) -> Scenario:
    """The trace's fault timeline as a drill on the same system, seed and length."""
    faults = tuple(
        ScheduledFault(at=row["tick"], fault=Fault.parse(f["fault"]), target=f["target"])
        for row in trace.rows
        for f in row["faults"]
    )
    ticks = len(trace.rows) or int(trace.header["ticks"])
    name = f"{trace.path.stem} ({trace.header.get('order', '?')} vs {trace.header.get('chaos', '?')})"
    return Scenario(name, trace.topology, ticks, int(trace.header["seed"]), faults, Expectation())


@dataclass(frozen=True)
class DrillRun:
    """One order policy's play of a drill."""

    label: str
    """Who played: the order policy's name as given."""
    metrics: Summary
    """The play's figures."""
    scheduled: int
    """Faults the drill schedules."""
    trace: TraceRecorder
    """The play, tick by tick."""
    checks: list[tuple[str, bool]]
    """The hypothesis' clauses as (text, met)."""

    @property
    def passed(self) -> bool:
        """Whether every clause of the hypothesis was met."""
        return all(met for _, met in self.checks)

    @property
    def skipped_faults(self) -> int:
        """Scheduled faults not injected because their target still had an open fault."""
        return self.scheduled - self.metrics.faults_injected

    def to_json(self) -> dict[str, Any]:
        """The play as ``replay --json`` writes it: the metrics, the schedule, each clause, the verdict."""
        return {
            **self.metrics.to_json(),
            "scheduled": self.scheduled,
            "expect": [{"clause": text, "met": met} for text, met in self.checks],
            "passed": self.passed,
        }


def run_drill(
    scenario: Scenario,
    label: str,
    order: Policy,
    backend: str = "sim",
    on_tick: Callable[[int], None] | None = None,
    params: SimParams | None = None,
) -> DrillRun:
    """Play the drill once against ``order`` and check its hypothesis (on the simulator: with
    ``params``, or the calibrated defaults)."""
    match = Match(scenario.topology, order, ScriptedChaos(scenario), backend, scenario.game_config(), params)
    traces: list[TraceRecorder] = []
    stats = play(match, 1, seed=scenario.seed, on_tick=on_tick, traces=traces)
    metrics = summarize(stats)
    checks = scenario.expect.check(metrics.availability, traces[0].rows[-1]) if scenario.expect else []
    return DrillRun(label, metrics, len(scenario.faults), traces[0], checks)
