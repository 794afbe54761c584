"""Per-tick records of an episode: what was injected and repaired, health, observations and the SLO.

A trace is JSON Lines (docs/design.md §8): a header object ``{"header": {...}}``, then one object per tick.
A tick's ``faults`` are every fault injected in it, at most one per service (several in a correlated failure).
``TraceRecorder`` writes them; ``read_trace`` reads one back, checking every line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeplops import bounds, outputs
from deeplops.bounds import shown, shown_keys
from deeplops.catalog import parse_json, read_text
from deeplops.errors import ConfigError, ScenarioError
from deeplops.faults import Fault, Repair
from deeplops.game import Game
from deeplops.observation import Feature
from deeplops.topology import Topology, load_topology, topology_from_dict
from deeplops.version import VERSION

_HEADER_KEYS = ("topology", "services", "seed", "ticks")
_ROW_KEYS = ("tick", "faults", "repairs", "health", "slo")


@dataclass
class TraceRecorder:
    """Collects the ticks of env ``env`` of a game, as trace rows."""

    env: int = 0
    """Which env of the batch to record."""
    header: dict[str, Any] = field(default_factory=dict)
    """Episode facts written first: topology, seed, policies, backend."""
    rows: list[dict[str, Any]] = field(default_factory=list)
    """One per tick."""

    def __call__(self, game: Game) -> None:
        """Record the tick ``game`` just played."""
        e, names = self.env, game.topology.names
        faults = [{"fault": fault.label, "target": names[slot]} for slot, fault in game.injected(e)]
        repairs = []
        if game.order_repair[e]:
            repairs.append({
                "repair": Repair(int(game.order_repair[e])).label,
                "target": names[game.order_slot[e]],
                "cleared": bool(game.cleared[e]),
            })  # fmt: skip
        seen = game.sandbox.observe()[e]
        self.rows.append({
            "tick": game.tick - 1,
            "faults": faults,
            "repairs": repairs,
            "health": {n: bool(h) for n, h in zip(names, game.sandbox.health[e], strict=True)},
            "slo": bool(game.sandbox.slo[e]),
            "obs": {n: [round(float(v), 4) for v in seen[i]] for i, n in enumerate(names)},
        })  # fmt: skip

    def write(self, path: Path, option: str = "trace") -> None:
        """Write the header and rows as JSON Lines, whole or not at all."""
        lines = [json.dumps({"header": {"version": VERSION, **self.header}})]
        lines += [json.dumps(row) for row in self.rows]
        outputs.write_text(path, "\n".join(lines) + "\n", option)


OBS_FEATURES = [f.name.lower() for f in Feature]
"""What the numbers of a row's ``obs[service]`` are, in order (``deeplops.observation.Feature``)."""


@dataclass(frozen=True)
class Trace:
    """A trace read back: its header, its rows, and the topology it was played on."""

    path: Path
    header: dict[str, Any]
    rows: list[dict[str, Any]]
    topology: Topology


def read_trace(path: str | Path, env: str | Path | None = None) -> Trace:
    """Read and check the trace at ``path``; ScenarioError names the first bad line.

    The topology is the header's (its full spec when present, else its name under ``envs/``);
    ``env`` names another one to play it on, which must have the same services.
    """
    path = Path(path)
    lines = read_text(path, ScenarioError, "a trace (JSON Lines)").splitlines()
    docs = [_json_line(path, i, line) for i, line in enumerate(lines, 1) if line.strip()]
    if not docs or not isinstance(docs[0], dict) or not isinstance(docs[0].get("header"), dict):
        raise ScenarioError(f'{path} line 1: expected a header object {{"header": {{...}}}} first')
    if len(docs) - 1 > bounds.MAX_TICKS:
        raise ScenarioError(f"{path}: {len(docs) - 1} ticks, more than the longest episode ({bounds.MAX_TICKS})")
    header = docs[0]["header"]
    _check_header(path, header)
    services = header["services"]
    topology = _topology(path, header, env)
    if set(topology.names) != set(services):
        raise ScenarioError(
            f"{path}: the trace was played on services {', '.join(services)}, but topology {topology.name!r} "
            f"has {', '.join(topology.names)}: expected the trace's own topology"
        )
    rows = docs[1:]
    for n, row in enumerate(rows):
        _check_row(path, n + 2, n, row, set(services))
    return Trace(path, header, rows, topology)


def _check_header(path: Path, header: dict[str, Any]) -> None:
    """The header's fields, each of the type and range a recorded trace gives it."""
    where = f"{path} line 1"
    missing = [k for k in _HEADER_KEYS if k not in header]
    if missing:
        raise ScenarioError(f"{where}: the header lacks {', '.join(missing)}: expected {', '.join(_HEADER_KEYS)}")
    version = header.get("version")
    if version is not None and not isinstance(version, str):
        raise ScenarioError(f"{where}: the header's 'version' must be a string, got {shown(version)}")
    services = header["services"]
    if not isinstance(services, list) or not services or not all(isinstance(s, str) for s in services):
        raise ScenarioError(f"{where}: the header's 'services' must be a list of service names, got {shown(services)}")
    if len(set(services)) != len(services):
        raise ScenarioError(f"{where}: the header's 'services' names a service twice")
    if not isinstance(header["topology"], str) or not header["topology"]:
        raise ScenarioError(
            f"{where}: the header's 'topology' must be a topology name, got {shown(header['topology'])}"
        )
    bounds.whole(header["seed"], f"{where}: the header's 'seed'", 0, bounds.MAX_SEED, ScenarioError)
    bounds.whole(header["ticks"], f"{where}: the header's 'ticks'", 1, bounds.MAX_TICKS, ScenarioError)
    for key in ("order", "chaos", "backend"):
        if key in header and not isinstance(header[key], str):
            raise ScenarioError(f"{where}: the header's {key!r} must be a string, got {shown(header[key])}")


def _json_line(path: Path, number: int, line: str) -> Any:
    return parse_json(line, ScenarioError, f"{path} line {number}", "one trace object per line")


def _topology(path: Path, header: dict[str, Any], env: str | Path | None) -> Topology:
    try:
        if env is not None:
            return load_topology(env)
        if isinstance(header.get("topology_spec"), dict):
            return topology_from_dict(header["topology_spec"], source=f"{path} header")
        return load_topology(str(header["topology"]))
    except ConfigError as exc:
        raise ScenarioError(f"{path}: the trace's topology: {exc}") from None


def _check_row(path: Path, line: int, tick: int, row: Any, services: set[str]) -> None:
    where = f"{path} line {line}"
    if not isinstance(row, dict) or any(k not in row for k in _ROW_KEYS):
        given = f"keys {shown_keys(set(row))}" if isinstance(row, dict) else shown(row)
        raise ScenarioError(f"{where}: expected an object with {', '.join(_ROW_KEYS)}, got {given}")
    if row["tick"] != tick or isinstance(row["tick"], bool):
        raise ScenarioError(f"{where}: expected tick {tick} (ticks count up from 0), got {shown(row['tick'])}")
    if not isinstance(row["faults"], list):
        raise ScenarioError(f"{where}: 'faults' must be a list of {{fault, target}}, got {shown(row['faults'])}")
    hit: dict[str, str] = {}
    for f in row["faults"]:
        target = f.get("target") if isinstance(f, dict) else None
        if not isinstance(target, str) or target not in services:
            raise ScenarioError(
                f"{where}: a fault must name a target among {', '.join(sorted(services))}, got {shown(target)}"
            )
        try:
            fault = Fault.parse(f.get("fault"), ScenarioError)
        except ScenarioError as exc:
            raise ScenarioError(f"{where}: {exc}") from None
        if target in hit:
            raise ScenarioError(
                f"{where}: two faults on {target!r} in one tick ({hit[target]} and {fault.label}): expected at "
                "most one per service"
            )
        hit[target] = fault.label
    if not isinstance(row["repairs"], list):
        raise ScenarioError(f"{where}: 'repairs' must be a list, got {shown(row['repairs'])}")
    health = row["health"]
    if not isinstance(health, dict) or set(health) != services or not all(isinstance(h, bool) for h in health.values()):
        raise ScenarioError(f"{where}: 'health' must map every service to true/false, got {shown(health)}")
    if not isinstance(row["slo"], bool):
        raise ScenarioError(f"{where}: 'slo' must be true or false, got {shown(row['slo'])}")
