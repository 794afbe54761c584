"""``deeplops selfplay``: train both agents and report."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from deeplops import bounds, outputs
from deeplops.cli.common import (
    BackendOpt,
    SeedOpt,
    SimOpt,
    app,
    check_backend,
    check_count,
    check_seed,
    err,
    on_interrupt,
    out,
    sim_params,
)
from deeplops.errors import ConfigError


@app.command()
def selfplay(
    env: Annotated[str, typer.Option("--env", help="Topology trained and reported on, besides random ones.")] = "shop",
    backend: BackendOpt = "sim",
    generations: Annotated[int, typer.Option("--generations", help="Rounds of order then chaos training.")] = 4,
    steps: Annotated[
        int, typer.Option("--steps", help="RL transitions per role per generation (times the role's steps_share).")
    ] = 400_000,
    out_dir: Annotated[Path, typer.Option("--out", help="Where agents, report, plots and logs go.")] = Path(
        "runs/selfplay"
    ),
    seed: SeedOpt = 0,
    device: Annotated[str, typer.Option("--device", help="Torch device: auto, cpu or cuda.")] = "auto",
    start_from: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Fine-tune the order.zip and chaos.zip in this directory instead of starting "
            "afresh [docker: agents/pretrained].",
            show_default=False,
        ),
    ] = None,
    ticks: Annotated[
        int | None, typer.Option("--ticks", help="Ticks per training episode [sim: 200, docker: 60].")
    ] = None,
    sim: SimOpt = None,
    imitate: Annotated[
        str | None,
        typer.Option(
            "--imitate",
            help="Warm-start the order agent each generation by cloning this baseline's play (e.g. runbook), "
            "or none: learn from rewards alone [default: agents/order.yaml's imitate, none as shipped].",
            show_default=False,
        ),
    ] = None,
    randomise: Annotated[
        bool,
        typer.Option(
            "--randomise/--no-randomise",
            help="Draw each training episode's dynamics (restart times per service, probe noise and lag, "
            "symptoms) from ranges around the calibration (or the --sim file, whose 'randomise' sets them).",
        ),
    ] = True,
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS",
            help="Play training rollouts and the report's games on the Ray cluster at ADDRESS (auto: the one "
            "started on this machine; or HOST:PORT of its head), the learner staying here. Needs pip install "
            '"deeplops[ray]".',
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Ray actors playing rollouts, one CPU each (with --ray) [default: one per CPU of the cluster; "
            "with --backend docker, one per node].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Train the order and chaos agents in alternating self-play, then measure them.

    Writes DIR/order.zip, DIR/chaos.zip, DIR/report.md, DIR/report.json, plots (PNG) and
    TensorBoard logs under DIR/tb/. An interrupted run resumes from its last completed generation.

    --backend docker plays every training game on real containers (the --env topology, one tick a
    second, as root): it fine-tunes trained agents, and its report adds a scenario replayed for real.

    --ray ADDRESS plays the training rollouts on a Ray cluster's actors, each with its share of the
    games and a copy of the network sent out at every update, and then the report's games, batch by
    batch, with the figures a run here gives; the learner stays here. With --backend docker each
    actor plays one game at a time on its own node's Docker engine (DOCKER_HOST there, local to that
    node): every node needs dockerd, root and the images (deeplops sandbox build).
    """
    from deeplops.learn import train_and_report
    from deeplops.raypool import MAX_WORKERS, connect
    from deeplops.selfplay import SelfPlay, SelfPlayConfig, teacher
    from deeplops.topology import load_topology

    check_backend(backend)
    check_count("--generations", generations, maximum=bounds.MAX_GENERATIONS)
    check_count("--steps", steps, minimum=0)
    check_seed(seed)
    check_count("--ticks", ticks, maximum=bounds.MAX_TICKS)
    check_count("--workers", workers, maximum=MAX_WORKERS)
    if workers is not None and ray is None:
        raise ConfigError("--workers applies to rollouts on a Ray cluster: expected --ray ADDRESS with it")
    params = sim_params(sim, backend)
    outputs.check_dir(out_dir, "--out")
    load_topology(env)
    train_on = tuple(dict.fromkeys([env, "shop", "chain"]))
    config = SelfPlayConfig.from_files(generations=generations, steps=steps, seed=seed, device=device,
                                       train_on=train_on, backend=backend,
                                       start_from=None if start_from is None else str(start_from),
                                       ticks=ticks or (200 if backend == "sim" else 60), sim=params,
                                       randomise=randomise)  # fmt: skip
    if imitate is not None:
        config = replace(config, order=replace(config.order, imitate=teacher(imitate)))
    SelfPlay(config, out_dir).completed()  # a run there with other settings, or a corrupt state, fails now
    cluster = None if ray is None else connect(ray, workers, per_node=config.real)
    on_interrupt(f"generations completed are kept in {out_dir}: the same command resumes from the last one")
    with _Phases() as progress, cluster or nullcontext():
        report, files = train_and_report(config, out_dir, progress, cluster=cluster)
    shown = escape(str(out_dir))
    names = ", ".join(p.name for p in files)
    out.print(f"wrote {shown}/order.zip, chaos.zip and {names} in {report.wall_s:.0f} s")
    if cluster is not None:
        replaced = f"; {cluster.replaced} that died replaced" if cluster.replaced else ""
        out.print(f"rollouts played by {cluster.workers} Ray workers on {len(cluster.nodes)} nodes of "
                  f"{escape(cluster.address)}, the report's games on {len(cluster.evaluation_nodes)}"
                  f"{replaced}")  # fmt: skip
    for section, checks in report.bar.items():
        verdict = "[green]meets the bar[/]" if all(checks.values()) else "[red]below the bar[/]"
        out.print(f"{section}: {verdict}")


class _Phases:
    """A progress bar per training phase (generation and role), on the terminal."""

    def __init__(self) -> None:
        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=err, disable=not err.is_terminal,
        )  # fmt: skip
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Any:
        from deeplops.selfplay import Progress as Hook

        self._bar.__enter__()
        return Hook(update=self._update)

    def _update(self, label: str, done: int, total: int) -> None:
        if label not in self._tasks:
            self._tasks[label] = self._bar.add_task(label, total=max(total, 1))
        self._bar.update(self._tasks[label], completed=done)

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)  # type: ignore[arg-type]
