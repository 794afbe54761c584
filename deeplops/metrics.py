"""Episode metrics (availability, MTTR, repairs) and their summary across episodes (DESIGN §4, §6)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EpisodeStats:
    """What one episode measured."""

    ticks: int
    """Ticks played."""
    slo_ticks: int
    """Ticks in which the SLO held."""
    faults_injected: int
    """Faults the chaos agent started."""
    faults_recovered: int
    """Faults whose target and the SLO were healthy again before the episode ended."""
    unrecovered: int
    """Faults still open (active, or ended but not yet recovered) at the end."""
    mttrs: tuple[int, ...]
    """Ticks from injection to recovery, one per recovered fault."""
    repairs: int
    """Repairs taken (no-ops excluded)."""
    wasted_repairs: int
    """Repairs that ended no fault: wrong service or wrong repair."""
    data_loss: int
    """Recreates of a service with a data volume: its data was lost."""
    invalid_actions: int
    """Masked actions taken by either agent, played as no-ops."""

    @property
    def availability(self) -> float:
        """Fraction of ticks in which the SLO held."""
        return self.slo_ticks / self.ticks if self.ticks else 1.0


def summarize(episodes: Sequence[EpisodeStats]) -> dict[str, float | int | None]:
    """The contract metrics over ``episodes``: the object ``--json`` writes (DESIGN §6).

    ``mttr_mean`` and ``mttr_p95`` are over recovered faults and are ``None`` when none recovered.
    """
    mttrs = np.array([m for ep in episodes for m in ep.mttrs], dtype=np.float64)
    ticks = sum(ep.ticks for ep in episodes)
    return {
        "availability": sum(ep.slo_ticks for ep in episodes) / ticks if ticks else 1.0,
        "mttr_mean": float(mttrs.mean()) if mttrs.size else None,
        "mttr_p95": float(np.percentile(mttrs, 95)) if mttrs.size else None,
        "faults_injected": sum(ep.faults_injected for ep in episodes),
        "faults_recovered": sum(ep.faults_recovered for ep in episodes),
        "unrecovered": sum(ep.unrecovered for ep in episodes),
        "repairs": sum(ep.repairs for ep in episodes),
        "wasted_repairs": sum(ep.wasted_repairs for ep in episodes),
        "data_loss": sum(ep.data_loss for ep in episodes),
        "invalid_actions": sum(ep.invalid_actions for ep in episodes),
        "episodes": len(episodes),
        "ticks": ticks,
    }
