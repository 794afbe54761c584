"""How things look to a person: plain-text snapshots of a system, and rich tables of metrics."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from rich.table import Table
from rich.text import Text

from deeplops.metrics import Summary
from deeplops.observation import Feature
from deeplops.topology import Topology


def snapshot(topology: Topology, services: np.ndarray, tick: int, slo: bool) -> str:
    """One env's symptoms as a fixed-width text table (the envs' ``ansi`` render)."""
    columns = [("service", "<12"), ("health", "<7"), ("run", "<4"), ("lat_s", ">6"), ("err", ">5"),
               ("disk", ">5"), ("cpu", ">5"), ("net", ">5")]  # fmt: skip
    header = " ".join(f"{name:{spec}}" for name, spec in columns)
    lines = [f"tick {tick}  SLO {'ok' if slo else 'FAILING'}", header]
    for slot, name in enumerate(topology.names):
        f = services[slot]
        health = "ok" if f[Feature.HEALTHY] > 0.5 else "FAIL"
        running = "yes" if f[Feature.RUNNING] > 0.5 else "no"
        lines.append(
            f"{name:<12} {health:<7} {running:<4} {f[Feature.LATENCY]:6.3f} {f[Feature.ERROR_RATE]:5.2f} "
            f"{f[Feature.DISK_USED]:5.2f} {f[Feature.CPU]:5.2f} {f[Feature.NET_RX]:5.2f}"
        )
    return "\n".join(lines) + "\n"


def metrics_table(rows: Mapping[str, Summary], title: str) -> Table:
    """A table with one row per policy (or scenario) and the headline metrics as columns.

    avail: availability; MTTR and p95: mean and 95th percentile ticks to recovery; faults,
    recov, unrec: faults injected, recovered and unrecovered; relapse: symptoms back after a repair
    had ended them, the cause still there; wasted: repairs that ended no fault.
    """
    table = Table(title=Text(title))  # Text: names a user gave are shown as given, never as markup
    table.add_column("", justify="left", no_wrap=True)
    for column in ("avail", "MTTR", "p95", "faults", "recov", "unrec", "relapse", "repairs", "wasted"):
        table.add_column(column, justify="right")
    for name, m in rows.items():
        table.add_row(
            Text(name),
            f"{m.availability:.3f}",
            _ticks(m.mttr_mean),
            _ticks(m.mttr_p95),
            str(m.faults_injected),
            str(m.faults_recovered),
            str(m.unrecovered),
            str(m.relapses),
            str(m.repairs),
            str(m.wasted_repairs),
        )
    return table


def _ticks(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
