"""Per-tick records of an episode: what was injected and repaired, health, observations and the SLO.

A trace is JSON Lines (DESIGN §5): a header object ``{"header": {...}}``, then one object per tick.
``TraceRecorder`` writes them; ``read_trace`` reads one back, checking every line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeplops import __version__
from deeplops.errors import ConfigError, ScenarioError
from deeplops.faults import Fault, Repair
from deeplops.game import Game
from deeplops.observation import Feature
from deeplops.topology import Topology, load_topology, topology_from_dict

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
        faults = []
        if game.chaos_fault[e]:
            faults.append({"fault": Fault(int(game.chaos_fault[e])).label, "target": names[game.chaos_slot[e]]})
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

    def write(self, path: Path) -> None:
        """Write the header and rows as JSON Lines."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            out.write(json.dumps({"header": {"version": __version__, **self.header}}) + "\n")
            for row in self.rows:
                out.write(json.dumps(row) + "\n")


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
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read the trace ({exc.strerror}): expected a JSON Lines file") from None
    docs = [_json_line(path, i, line) for i, line in enumerate(lines, 1) if line.strip()]
    if not docs or not isinstance(docs[0], dict) or not isinstance(docs[0].get("header"), dict):
        raise ScenarioError(
            f'{path} line 1: expected a header object {{"header": {{...}}}} first, got {docs[:1]!r:.60}'
        )
    header = docs[0]["header"]
    missing = [k for k in _HEADER_KEYS if k not in header]
    if missing:
        raise ScenarioError(f"{path} line 1: the header lacks {', '.join(missing)}: expected {', '.join(_HEADER_KEYS)}")
    services = header["services"]
    topology = _topology(path, header, env)
    if not isinstance(services, list) or set(topology.names) != set(services):
        raise ScenarioError(
            f"{path}: the trace was played on services {', '.join(map(str, services))}, but topology {topology.name!r} "
            f"has {', '.join(topology.names)}: expected the trace's own topology"
        )
    rows = docs[1:]
    for n, row in enumerate(rows):
        _check_row(path, n + 2, n, row, set(services))
    return Trace(path, header, rows, topology)


def _json_line(path: Path, number: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path} line {number}: not JSON ({exc.msg}): expected one trace object per line") from None


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
        raise ScenarioError(f"{where}: expected an object with {', '.join(_ROW_KEYS)}, got {row!r:.60}")
    if row["tick"] != tick:
        raise ScenarioError(f"{where}: expected tick {tick} (ticks count up from 0), got {row['tick']!r}")
    if not isinstance(row["faults"], list) or len(row["faults"]) > 1:
        raise ScenarioError(
            f"{where}: 'faults' must be a list of at most one {{fault, target}}, got {row['faults']!r:.60}"
        )
    for f in row["faults"]:
        if not isinstance(f, dict) or f.get("target") not in services:
            raise ScenarioError(
                f"{where}: a fault must name a target among {', '.join(sorted(services))}, got {f!r:.60}"
            )
        try:
            Fault.parse(f.get("fault"), ScenarioError)
        except ScenarioError as exc:
            raise ScenarioError(f"{where}: {exc}") from None
    if not isinstance(row["health"], dict) or set(row["health"]) != services:
        raise ScenarioError(f"{where}: 'health' must map every service to true/false, got {row['health']!r:.60}")
    if not isinstance(row["slo"], bool):
        raise ScenarioError(f"{where}: 'slo' must be true or false, got {row['slo']!r}")
