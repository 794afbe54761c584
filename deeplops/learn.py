"""A whole ``deeplops selfplay``: train (or resume) both agents, measure them, write agents, report and plots."""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path

from deeplops import report
from deeplops.raypool import RayCluster
from deeplops.selfplay import Progress, SelfPlay, SelfPlayConfig


def train_and_report(
    config: SelfPlayConfig,
    out: Path,
    progress: Progress | None = None,
    episodes: int = 32,
    cluster: RayCluster | None = None,
) -> tuple[report.Report, list[Path]]:
    """Train (or resume) the run ``config`` in ``out``, measure it, and write order.zip, chaos.zip,
    the report and its plots there; return the report and the report's files. ``cluster``: where
    training rollouts are played, None for this process."""
    start = time.monotonic()
    run = SelfPlay(config, out, progress, cluster)
    order_path, chaos_path = run.run()
    measured = report.build_report(run, episodes=episodes, progress=progress)
    wall_s = time.monotonic() - start  # training and measuring: the replay on real containers is not counted
    shutil.copyfile(order_path, out / "order.zip")
    shutil.copyfile(chaos_path, out / "chaos.zip")
    real = report.real_drill(config, order_path, progress or Progress(), run.caller) if config.real else None
    measured = replace(measured, wall_s=wall_s, real=real)
    return measured, report.write(out, measured)
