"""Per-tick records of an episode: what was injected and repaired, health and the SLO.

A trace is JSON Lines (DESIGN §5): a header object, then one object per tick.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deeplops import __version__
from deeplops.faults import Fault, Repair
from deeplops.game import Game


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
        self.rows.append({
            "tick": game.tick - 1,
            "faults": faults,
            "repairs": repairs,
            "health": {n: bool(h) for n, h in zip(names, game.sandbox.health[e], strict=True)},
            "slo": bool(game.sandbox.slo[e]),
        })  # fmt: skip

    def write(self, path: Path) -> None:
        """Write the header and rows as JSON Lines."""
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as out:
            out.write(json.dumps({"header": {"version": __version__, **self.header}}) + "\n")
            for row in self.rows:
                out.write(json.dumps(row) + "\n")
