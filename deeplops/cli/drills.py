"""``deeplops evaluate`` and ``deeplops replay``: play policies against chaos, scenarios, traces."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from deeplops import bounds, outputs
from deeplops.cli.common import (
    BackendOpt,
    Bar,
    JsonOpt,
    OrderOpt,
    SeedOpt,
    SimOpt,
    app,
    check_backend,
    check_count,
    check_json,
    check_seed,
    on_interrupt,
    out,
    sim_params,
    write_json,
)  # fmt: skip
from deeplops.errors import ConfigError


@app.command()
def evaluate(
    order: OrderOpt,
    chaos: Annotated[
        str | None,
        typer.Option(
            "--chaos",
            help="Chaos policy: noop, random, flapping (re-breaks what was just repaired), or a saved agent's path "
            "[default: random].",
            show_default=False,
        ),
    ] = None,
    scenario: Annotated[
        list[Path] | None, typer.Option("--scenario", help="Play this scenario file instead of chaos (repeatable).")
    ] = None,
    env: Annotated[
        str | None,
        typer.Option("--env", help="Topology: a name under envs/ or a YAML path [default: shop].", show_default=False),
    ] = None,
    episodes: Annotated[
        int | None, typer.Option("--episodes", help="Episodes to play [default: 30, or 1 per scenario].")
    ] = None,
    backend: BackendOpt = "sim",
    seed: SeedOpt = 0,
    json_path: JsonOpt = None,
    record: Annotated[
        Path | None, typer.Option("--record", help="Write one JSON Lines trace per episode here.")
    ] = None,
    sim: SimOpt = None,
) -> None:
    """Play an order policy against chaos (or scripted scenarios) and report availability and MTTR."""
    from deeplops import evaluate as ev
    from deeplops.actions import Role
    from deeplops.display import metrics_table
    from deeplops.metrics import Summary, summarize
    from deeplops.policies import load_policy
    from deeplops.scenario import ScriptedChaos, load_scenario
    from deeplops.topology import load_topology

    check_backend(backend)
    check_count("--episodes", episodes, maximum=bounds.MAX_EPISODES)
    check_seed(seed, episodes or 30)
    check_json(json_path)
    params = sim_params(sim, backend)
    if record is not None:
        outputs.check_dir(record, "--record")
    if scenario and (chaos is not None or env is not None):
        given = "--chaos" if chaos is not None else "--env"
        raise ConfigError(f"{given} does not apply with --scenario: a scenario names its topology and its faults")
    chaos, env = chaos or "random", env or "shop"
    order_policy = load_policy(order, Role.ORDER)
    traces: list | None = [] if record else None
    on_interrupt("nothing was written" + ("; its containers are removed" if backend != "sim" else ""))
    if scenario:
        scenarios = [load_scenario(p) for p in scenario]
        for s in scenarios:
            if s.seed + (episodes or 1) - 1 > bounds.MAX_SEED:
                raise ConfigError(f"--episodes {episodes} of scenario {s.name!r} (seed {s.seed}) reach seed "
                                  f"{s.seed + (episodes or 1) - 1}: expected at most {bounds.MAX_SEED}")  # fmt: skip
        plays = [
            (
                s.name,
                ev.Match(s.topology, order_policy, ScriptedChaos(s), backend, s.game_config(), params),
                episodes or 1,
                s.seed,
            )
            for s in scenarios
        ]
    else:
        match = ev.Match(load_topology(env), order_policy, load_policy(chaos, Role.CHAOS), backend, params=params)
        plays = [(order, match, episodes or 30, seed)]
    rows: dict[str, Summary] = {}
    all_stats = []
    with Bar(sum(n * m.game.max_ticks for _, m, n, _ in plays), "playing") as advance:
        for label, match, n, first_seed in plays:
            stats = ev.play(match, n, seed=first_seed, on_tick=advance, traces=traces)
            rows[label] = summarize(stats)
            all_stats += stats
    result: dict[str, Any] = {**summarize(all_stats).to_json(), "order": order, "backend": backend}
    if sim is not None:
        result["sim"] = str(sim)
    if scenario:
        result["scenarios"] = {label: summary.to_json() for label, summary in rows.items()}
    else:
        result.update(chaos=chaos, env=plays[0][1].topology.name, seed=seed)
    against = "scenarios" if scenario else f"chaos={chaos} on {plays[0][1].topology.name}"
    out.print(metrics_table(rows, title=f"order={order} vs {against}, {len(all_stats)} episode(s), {backend}"))
    if traces is not None and record is not None:
        for i, trace in enumerate(traces):
            trace.write(record / f"episode-{i:04d}.jsonl", "--record")
        out.print(f"wrote {len(traces)} traces to {escape(str(record))}/")
    write_json(json_path, result)


@app.command()
def replay(
    file: Annotated[
        Path,
        typer.Argument(
            help="A scenario (.yaml), a trace recorded by 'evaluate --record' (.jsonl), or a Chaos Toolkit "
            "experiment (.json).",
            show_default=False,
        ),
    ],
    order: Annotated[
        list[str],
        typer.Option(
            "--order",
            help="Order policy: noop, random, autoheal, k8s, runbook, oracle, or a saved agent's path. "
            "Repeat it to compare policies on the same fault timeline.",
        ),
    ],
    backend: BackendOpt = "sim",
    env: Annotated[
        str | None,
        typer.Option("--env", help="Play a trace or experiment on this topology (its services must match)."),
    ] = None,
    json_path: JsonOpt = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Draw the timelines to this PNG file.")] = None,
    sim: SimOpt = None,
) -> None:
    """Play a drill's fault timeline against one or more order policies and check its steady-state hypothesis.

    On the sim, a trace replayed with the policy that recorded it reproduces its episode tick for
    tick (for deterministic policies: every baseline but random, and saved agents). Exits 1 when
    the drill's hypothesis fails for any policy, so a drill can gate a pipeline.
    """
    from deeplops.actions import Role
    from deeplops.display import metrics_table
    from deeplops.drill import load_drill, run_drill
    from deeplops.policies import load_policy

    check_backend(backend)
    check_json(json_path)
    params = sim_params(sim, backend)
    if plot is not None:
        outputs.check_file(plot, "--plot", outputs.PICTURE_SUFFIXES)
    drill = load_drill(file, env)
    policies = [(name, load_policy(name, Role.ORDER)) for name in dict.fromkeys(order)]  # all valid before playing
    on_interrupt("nothing was written" + ("; its containers are removed" if backend != "sim" else ""))
    runs = []
    with Bar(drill.ticks * len(policies), f"replaying {drill.name}") as advance:
        for name, policy in policies:
            runs.append(run_drill(drill, name, policy, backend, on_tick=advance, params=params))
    title = f"replay {drill.name} on {drill.topology.name} ({backend}): {len(drill.faults)} scheduled fault(s)"
    out.print(metrics_table({r.label: r.metrics for r in runs}, title=title))
    for r in runs:
        label = escape(r.label)
        if r.skipped_faults:
            out.print(f"note: {label}: {r.skipped_faults} scheduled fault(s) were not injected: "
                      "their target still had an open fault")  # fmt: skip
        for text, met in r.checks:
            out.print(f"{label}: steady-state hypothesis {text}: {'[green]met[/]' if met else '[red]NOT met[/]'}")
    if plot is not None:
        from deeplops.plot import plot_timeline

        plot_timeline(
            [(r.label, r.trace) for r in runs], plot, title=f"{drill.name} ({drill.topology.name}, {backend})"
        )
        out.print(f"wrote {escape(str(plot))}")
    results = {r.label: r.to_json() for r in runs}
    first = runs[0]
    write_json(json_path, {**results[first.label], "drill": drill.name, "file": str(file), "order": first.label,
                            "backend": backend, "policies": results})  # fmt: skip
    if not all(r.passed for r in runs):
        raise typer.Exit(1)
