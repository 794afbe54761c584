"""The ``deeplops`` command line: parse, call the library, report. Behaviour lives in the library."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from deeplops.errors import ConfigError, DeeplopsError, SandboxError, ScenarioError
from deeplops.sandbox import BACKENDS

app = typer.Typer(
    name="deeplops",
    help="Chaos-engineering reinforcement learning: a chaos agent breaks microservices, an order agent heals them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
if not out.is_terminal:  # files and pipes get whole tables, not 80-column ones
    out.width = 120


def _version(value: bool) -> None:
    if value:
        from deeplops import __version__

        out.print(f"deeplops {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Chaos-engineering reinforcement learning: a chaos agent breaks microservices, an order agent heals them."""


OrderOpt = Annotated[
    str,
    typer.Option(
        "--order", help="Order policy: noop, random, autoheal, k8s, runbook, oracle, or a saved agent's path."
    ),
]
BackendOpt = Annotated[str, typer.Option("--backend", help=f"Sandbox backend: {', '.join(BACKENDS)}.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the first episode; episode k uses seed + k.")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the metrics as one JSON object to this file.")]


@app.command()
def evaluate(
    order: OrderOpt,
    chaos: Annotated[
        str,
        typer.Option(
            "--chaos",
            help="Chaos policy: noop, random, flapping (re-breaks what was just repaired), or a saved agent's path.",
        ),
    ] = "random",
    scenario: Annotated[
        list[Path] | None, typer.Option("--scenario", help="Play this scenario file instead of chaos (repeatable).")
    ] = None,
    env: Annotated[str, typer.Option("--env", help="Topology: a name under envs/ or a YAML path.")] = "shop",
    episodes: Annotated[
        int | None, typer.Option("--episodes", help="Episodes to play [default: 30, or 1 per scenario].")
    ] = None,
    backend: BackendOpt = "sim",
    seed: SeedOpt = 0,
    json_path: JsonOpt = None,
    record: Annotated[
        Path | None, typer.Option("--record", help="Write one JSON Lines trace per episode here.")
    ] = None,
) -> None:
    """Play an order policy against chaos (or scripted scenarios) and report availability and MTTR."""
    from deeplops import evaluate as ev
    from deeplops.display import metrics_table
    from deeplops.metrics import summarize
    from deeplops.policies import Role, load_policy
    from deeplops.scenario import ScriptedChaos, load_scenario
    from deeplops.topology import load_topology

    _check_backend(backend)
    _check_count("--episodes", episodes)
    _check_count("--seed", seed, minimum=0)
    order_policy = load_policy(order, Role.ORDER)
    traces: list | None = [] if record else None
    if scenario:
        scenarios = [load_scenario(p) for p in scenario]
        plays = [
            (
                s.name,
                ev.Match(s.topology, order_policy, ScriptedChaos(s), backend, s.game_config()),
                episodes or 1,
                s.seed,
            )
            for s in scenarios
        ]
    else:
        match = ev.Match(load_topology(env), order_policy, load_policy(chaos, Role.CHAOS), backend)
        plays = [(order, match, episodes or 30, seed)]
    rows: dict[str, dict[str, Any]] = {}
    all_stats = []
    with _Progress(sum(n * m.game.max_ticks for _, m, n, _ in plays), "playing") as advance:
        for label, match, n, first_seed in plays:
            stats = ev.play(match, n, seed=first_seed, on_tick=advance, traces=traces)
            rows[label] = summarize(stats)
            all_stats += stats
    result: dict[str, Any] = {**summarize(all_stats), "order": order, "backend": backend}
    if scenario:
        result["scenarios"] = rows
    else:
        result.update(chaos=chaos, env=plays[0][1].topology.name, seed=seed)
    against = "scenarios" if scenario else f"chaos={chaos} on {plays[0][1].topology.name}"
    out.print(metrics_table(rows, title=f"order={order} vs {against}, {len(all_stats)} episode(s), {backend}"))
    if traces is not None and record is not None:
        for i, trace in enumerate(traces):
            trace.write(record / f"episode-{i:04d}.jsonl")
        out.print(f"wrote {len(traces)} traces to {record}/")
    _write_json(json_path, result)


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
) -> None:
    """Play a drill's fault timeline against one or more order policies and check its steady-state hypothesis.

    On the sim, a trace replayed with the policy that recorded it reproduces its episode tick for
    tick (for deterministic policies: every baseline but random, and saved agents). Exits 1 when
    the drill's hypothesis fails for any policy, so a drill can gate a pipeline.
    """
    from deeplops.display import metrics_table
    from deeplops.drill import load_drill, run_drill
    from deeplops.policies import Role, load_policy

    _check_backend(backend)
    drill = load_drill(file, env)
    policies = [(name, load_policy(name, Role.ORDER)) for name in dict.fromkeys(order)]  # all valid before playing
    runs = []
    with _Progress(drill.ticks * len(policies), f"replaying {drill.name}") as advance:
        for name, policy in policies:
            runs.append(run_drill(drill, name, policy, backend, on_tick=advance))
    title = f"replay {drill.name} on {drill.topology.name} ({backend}): {len(drill.faults)} scheduled fault(s)"
    out.print(metrics_table({r.label: r.metrics for r in runs}, title=title))
    for r in runs:
        if r.skipped_faults:
            out.print(f"note: {r.label}: {r.skipped_faults} scheduled fault(s) were not injected: "
                      "their target still had an open fault")  # fmt: skip
        for text, met in r.checks:
            out.print(f"{r.label}: steady-state hypothesis {text}: {'[green]met[/]' if met else '[red]NOT met[/]'}")
    if plot is not None:
        from deeplops.plot import plot_timeline

        plot_timeline(
            [(r.label, r.trace) for r in runs], plot, title=f"{drill.name} ({drill.topology.name}, {backend})"
        )
        out.print(f"wrote {plot}")
    results = {
        r.label: {**r.metrics, "expect": [{"clause": t, "met": m} for t, m in r.checks], "passed": r.passed}
        for r in runs
    }
    first = runs[0]
    _write_json(json_path, {**results[first.label], "drill": drill.name, "file": str(file), "order": first.label,
                            "backend": backend, "policies": results})  # fmt: skip
    if not all(r.passed for r in runs):
        raise typer.Exit(1)


bench_app = typer.Typer(
    help="Measure: env steps/s (bare 'deeplops bench'), or the sidecar on real containers (bench sidecar, bench soak).",
    invoke_without_command=True,
)
app.add_typer(bench_app, name="bench")


@bench_app.callback()
def bench(
    ctx: typer.Context,
    json_path: JsonOpt = None,
    seconds: Annotated[float, typer.Option("--seconds", help="Measuring time per configuration.")] = 2.0,
) -> None:
    """Measure env steps/s, single and batched, beside Gymnasium's CartPole in the same process."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from deeplops import bench as b

    if seconds <= 0:
        raise ConfigError(f"--seconds must be > 0, got {seconds}")
    with err.status("measuring..."):
        result = b.run(seconds=seconds)
    table = Table(title=f"deeplops bench (CartPole-v1: {result['cartpole_steps_per_s']:,.0f} steps/s)")
    for column in ("env", "n_envs", "env-steps/s", "× CartPole"):
        table.add_column(column, justify="left" if column == "env" else "right")
    for r in result["results"]:  # type: ignore[attr-defined]
        table.add_row(r["env"], str(r["n_envs"]), f"{r['steps_per_s']:,.0f}", f"{r['ratio_to_cartpole']:.2f}")
    out.print(table)
    _write_json(json_path, result)


@bench_app.command("sidecar")
def bench_sidecar(
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy", help="Sidecar policy (repeatable); 'none' is no sidecar [default: pretrained, autoheal, none]."
        ),
    ] = None,
    cap: Annotated[
        float, typer.Option("--cap", help="Seconds a fault may take to recover before it counts as never.")
    ] = 30.0,
    json_path: JsonOpt = None,
) -> None:
    """Detection and recovery per fault type on a live shop sandbox, one fault at a time, per policy (~6 min).

    Detection: injection to the sidecar's first repair. Recovery: injection to every service
    healthy with the SLO met, as the sidecar measures it. Needs root and a Docker engine.
    """
    from rich.table import Table

    from deeplops.sidecar import trial

    found = trial.incidents(policy or ["pretrained", "autoheal", trial.NONE], cap, log=lambda line: err.print(line))
    table = Table(title="sidecar: seconds from injection to detection / recovery")
    table.add_column("policy")
    faults = [f"{f.label} {t}" for f, t in trial.INCIDENTS]
    for column in faults:
        table.add_column(column, justify="right")
    for name in dict.fromkeys(i.policy for i in found):
        cells = {f"{i.fault} {i.target}": i for i in found if i.policy == name}
        table.add_row(name, *(_incident_cell(cells[f], cap) for f in faults))
    out.print(table)
    _write_json(json_path, {"cap_s": cap, "incidents": [vars(i) for i in found]})


def _incident_cell(i: Any, cap: float) -> str:
    det = "-" if i.detection_s is None else f"{i.detection_s:.1f}"
    rec = f"never ({cap:.0f} s)" if i.recovery_s is None else f"{i.recovery_s:.1f}"
    return f"{det} / {rec}"


@bench_app.command("soak")
def bench_soak(
    policy: Annotated[str, typer.Option("--policy", help="The sidecar's policy.")] = "pretrained",
    minutes: Annotated[float, typer.Option("--minutes", help="How long to run.")] = 10.0,
    gap: Annotated[str, typer.Option("--gap", help="Seconds between faults, MIN,MAX (uniformly random).")] = "10,30",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fault schedule.")] = 0,
    json_path: JsonOpt = None,
) -> None:
    """The sidecar process on a live shop sandbox under random chaos: does it stay up, is its memory
    flat, is every decision in its audit log? Exits 1 if not. Needs root and a Docker engine."""
    from deeplops.sidecar import trial

    try:
        low, high = (float(x) for x in gap.split(","))
    except ValueError:
        raise ConfigError(f"--gap expects MIN,MAX seconds, got {gap!r}") from None
    result = trial.soak(policy, minutes * 60, (low, high), seed, log=lambda line: err.print(line)).to_dict()
    out.print(
        f"soak of {policy}: {result['seconds'] / 60:.1f} min, {result['faults_injected']} faults, "
        f"availability {result['availability']:.3f}\n"
        f"  alive throughout: {result['alive']}; SIGTERM: exit {result['exit_code']} in {result['stop_s']:.2f} s\n"
        f"  resident memory: {result['rss_mb_start']:.1f} MiB at start, {result['rss_mb_end']:.1f} at end, "
        f"{result['rss_mb_max']:.1f} at most\n"
        f"  audit log: {result['audit']}\n  counted:   {result['counted']}\n"
        f"  every decision audited: {result['every_decision_audited']}"
    )
    _write_json(json_path, result)
    if not (result["alive"] and result["exit_code"] == 0 and result["every_decision_audited"]):
        raise typer.Exit(1)


@app.command()
def selfplay(
    env: Annotated[str, typer.Option("--env", help="Topology trained and reported on, besides random ones.")] = "shop",
    backend: BackendOpt = "sim",
    generations: Annotated[int, typer.Option("--generations", help="Rounds of order then chaos training.")] = 4,
    steps: Annotated[int, typer.Option("--steps", help="RL transitions per role per generation.")] = 150_000,
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
) -> None:
    """Train the order and chaos agents in alternating self-play, then measure them.

    Writes DIR/order.zip, DIR/chaos.zip, DIR/report.md, DIR/report.json, plots (PNG) and
    TensorBoard logs under DIR/tb/. An interrupted run resumes from its last completed generation.

    --backend docker plays every training game on real containers (the --env topology, one tick a
    second, as root): it fine-tunes trained agents, and its report adds a scenario replayed for real.
    """
    from deeplops import selfplay as sp_mod
    from deeplops.topology import load_topology

    _check_backend(backend)
    _check_count("--generations", generations)
    _check_count("--steps", steps, minimum=0)
    _check_count("--seed", seed, minimum=0)
    _check_count("--ticks", ticks)
    load_topology(env)
    train_on = tuple(dict.fromkeys([env, "shop", "chain"]))
    config = sp_mod.SelfPlayConfig(generations=generations, steps=steps, seed=seed, device=device, train_on=train_on,
                                   backend=backend, start_from=None if start_from is None else str(start_from),
                                   ticks=ticks or (200 if backend == "sim" else 60))  # fmt: skip
    with _Phases() as progress:
        report = sp_mod.train_and_report(config, out_dir, progress)
    out.print(f"wrote {out_dir}/order.zip, chaos.zip and {', '.join(report['files'])} in {report['wall_s']:.0f} s")
    for section, checks in report["bar"].items():
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


@app.command()
def sidecar(
    policy: Annotated[
        str,
        typer.Option("--policy", help="Order policy: a saved agent's path, or a baseline (runbook, autoheal, k8s)."),
    ],
    project: Annotated[
        str,
        typer.Option(
            "--project", help="Watch containers labelled deeplops.sandbox=NAME or com.docker.compose.project=NAME."
        ),
    ],
    interval: Annotated[
        float,
        typer.Option("--interval", help="Seconds between decisions (trained agents count one tick a second)."),
    ] = 1.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and log, touch nothing.")] = False,
    max_actions: Annotated[
        int, typer.Option("--max-actions-per-minute", help="Repairs applied in any 60 s, stack-wide.")
    ] = 6,
    cooldown: Annotated[
        float, typer.Option("--cooldown", help="Seconds a repaired service is left alone; doubles while repairs fail.")
    ] = 10.0,
    allow: Annotated[
        str, typer.Option("--allow", help="Repairs it may apply, comma-separated.")
    ] = "restart,clean_disk,rate_limit",
    allow_recreate: Annotated[
        bool, typer.Option("--allow-recreate", help="Also allow recreate, which loses the service's data.")
    ] = False,
    breaker: Annotated[
        int, typer.Option("--breaker", help="Failed repairs in a row that open the circuit breaker.")
    ] = 3,
    verify: Annotated[
        float, typer.Option("--verify", help="Seconds for a repaired service to be healthy again, or it failed.")
    ] = 15.0,
    metrics_port: Annotated[
        int, typer.Option("--metrics-port", help="Port of /metrics (Prometheus) and /healthz; 0 for none.")
    ] = 9464,
    audit_log: Annotated[
        Path | None, typer.Option("--audit-log", help="Append the JSON audit log here [default: standard output].")
    ] = None,
) -> None:
    """Heal a live stack with a trained order agent, behind guard rails, until SIGTERM or Ctrl-C.

    Every --interval it measures the stack as the environment does, asks the policy for a repair,
    and applies it through the Docker backend unless a guard holds it back: the allowlist, the rate
    limit, the per-service cooldown, or the circuit breaker (which opens, and alerts, when repairs
    stop restoring health). Every decision goes to the JSON audit log.
    """
    import signal
    import threading

    from deeplops.faults import Repair
    from deeplops.policies import Role, load_policy
    from deeplops.sidecar.daemon import Sidecar, SidecarConfig
    from deeplops.sidecar.guards import GuardConfig

    repairs = tuple(Repair.parse(r.strip(), ConfigError) for r in allow.split(",") if r.strip())
    if Repair.NOOP in repairs:
        raise ConfigError("--allow lists repairs: restart, clean_disk, rate_limit, recreate; got noop")
    if Repair.RECREATE in repairs and not allow_recreate:
        raise ConfigError("--allow recreate loses the service's data: add --allow-recreate to mean it")
    if allow_recreate and Repair.RECREATE not in repairs:
        repairs += (Repair.RECREATE,)
    _check_count("--max-actions-per-minute", max_actions)
    _check_count("--breaker", breaker)
    _check_count("--metrics-port", metrics_port, minimum=0)
    if not interval > 0 or cooldown < 0:
        raise ConfigError(f"expected --interval > 0 and --cooldown >= 0, got {interval} and {cooldown}")
    guards = GuardConfig(allow=repairs, max_per_minute=max_actions, cooldown_s=cooldown, breaker_failures=breaker,
                         max_cooldown_s=max(300.0, cooldown))  # fmt: skip
    config = SidecarConfig(project, interval, dry_run, guards, verify, metrics_port or None, audit_log)
    daemon = Sidecar(load_policy(policy, Role.ORDER), config, log=lambda line: err.print(line))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    port = f", metrics on :{daemon.server.port}" if daemon.server is not None else ""
    err.print(f"sidecar: watching {project} with {policy}{' (dry run)' if dry_run else ''}{port}")
    try:
        daemon.run(stop)
    finally:
        daemon.close()
    err.print("sidecar: stopped")


scenario_app = typer.Typer(help="Failure drills: list the shipped scenarios, export one for other tools.",
                            no_args_is_help=True)  # fmt: skip
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("list")
def scenario_list(
    order: Annotated[
        list[str] | None,
        typer.Option("--order", help="Also replay each scenario with this order policy (repeatable)."),
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print a Markdown table (as in scenarios/README.md).")
    ] = False,
) -> None:
    """The shipped scenarios: env, faults, the incident each models, and (with --order) each policy's figures."""
    from rich.table import Table

    from deeplops.drill import run_drill
    from deeplops.policies import Role, load_policy
    from deeplops.scenario import load_scenario, shipped_scenarios

    scenarios = [load_scenario(p) for p in shipped_scenarios()]
    policies = [(name, load_policy(name, Role.ORDER)) for name in dict.fromkeys(order or [])]
    columns = ["scenario", "env", "faults", "models"] + [f"{n} avail / MTTR" for n, _ in policies]
    rows = []
    with _Progress(sum(s.ticks for s in scenarios) * len(policies), "replaying") as advance:
        for s in scenarios:
            faults = ", ".join(sorted({f.fault.label for f in s.faults}))
            cells = [s.name, s.topology.name, faults, s.description]
            for _, policy in policies:
                m = run_drill(s, "", policy, on_tick=advance).metrics
                mttr = "-" if m["mttr_mean"] is None else f"{m['mttr_mean']:.1f}"
                cells.append(f"{m['availability']:.3f} / {mttr}")
            rows.append(cells)
    if markdown:
        out.print("| " + " | ".join(columns) + " |", soft_wrap=True)
        out.print("|" + "---|" * len(columns), soft_wrap=True)
        for cells in rows:
            out.print("| " + " | ".join(cells) + " |", soft_wrap=True, markup=False)
        return
    table = Table(title=f"{len(rows)} shipped scenarios")
    for c in columns:
        table.add_column(c)
    for cells in rows:
        table.add_row(*cells)
    out.print(table)


@scenario_app.command("export")
def scenario_export(
    file: Annotated[Path, typer.Argument(help="A scenario YAML file.", show_default=False)],
    format_: Annotated[str, typer.Option("--format", help="What to write: chaostoolkit.")] = "chaostoolkit",
    output: Annotated[Path | None, typer.Option("--out", help="Write here instead of to standard output.")] = None,
) -> None:
    """Write a scenario as a Chaos Toolkit experiment: 'chaos run' plays its faults on a live sandbox
    (named by DEEPLOPS_SANDBOX) and 'deeplops replay' reads it back."""
    from deeplops.chaostoolkit.experiment import to_experiment
    from deeplops.scenario import load_scenario

    if format_ != "chaostoolkit":
        raise ConfigError(f"--format must be chaostoolkit, got {format_!r}")
    if file.suffix not in (".yaml", ".yml"):
        raise ScenarioError(f"{file}: expected a scenario .yaml file, got {file.suffix or 'no extension'}")
    text = json.dumps(to_experiment(load_scenario(file)), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(output)
    except OSError as exc:
        raise ConfigError(f"--out {output}: cannot write ({exc.strerror})") from None
    err.print(f"wrote {output}")


sandbox_app = typer.Typer(
    help="Real containers: build the service image, bring a topology up or down, see its state.",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")
NameOpt = Annotated[str, typer.Option("--name", help="Sandbox name: its network, and the prefix of its containers.")]


@sandbox_app.command("build")
def sandbox_build(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if the image is up to date.")] = False,
    sidecar_image: Annotated[
        bool,
        typer.Option("--sidecar", help="Also build the sidecar's image (deeplops/sidecar; from a checkout, ~2 min)."),
    ] = False,
) -> None:
    """Build the service image with no registry (debootstrap + import); skipped when up to date."""
    from deeplops.dockerbox import image, stack

    client = stack.connect()
    tag = image.ensure_image(client, log=lambda line: err.print(line), force=force)
    out.print(f"image {tag} ready")
    if sidecar_image:
        tag = image.ensure_sidecar_image(client, log=lambda line: err.print(line), force=force)
        out.print(f"image {tag} ready")


@sandbox_app.command("up")
def sandbox_up(
    env: Annotated[str, typer.Option("--env", help="Topology: a name under envs/ or a YAML path.")] = "shop",
    name: NameOpt = "deeplops",
    seed: SeedOpt = 0,
) -> None:
    """Start a topology as containers, each labelled deeplops.sandbox=NAME and deeplops.service=SERVICE."""
    import time

    from deeplops.dockerbox import image, stack
    from deeplops.topology import load_topology

    topology = load_topology(env)
    client = stack.connect()
    tag = image.ensure_image(client, log=lambda line: err.print(line))
    data = stack.data_fractions(topology, seed)
    start = time.monotonic()
    try:
        stack.up(client, topology, name, tag, data)
    except BaseException:
        stack.down(name, client)  # nothing half-made stays behind
        raise
    took = time.monotonic() - start
    out.print(f"sandbox {name}: {topology.n_services} services of {topology.name} up in {took:.1f} s")


@sandbox_app.command("down")
def sandbox_down(
    name: NameOpt = "deeplops",
    all_: Annotated[bool, typer.Option("--all", help="Remove every deeplops sandbox on this engine.")] = False,
) -> None:
    """Remove a sandbox's containers, network, volumes and blocks, including what a crashed run left."""
    from deeplops.dockerbox import stack

    client = stack.connect()
    names = sorted(stack.sandboxes(client)) if all_ else [name]
    for sandbox in names:
        removed = stack.down(sandbox, client)
        out.print(f"sandbox {sandbox}: " + (f"removed {len(removed)} item(s)" if removed else "nothing to remove"))


@sandbox_app.command("status")
def sandbox_status(
    name: NameOpt = "deeplops",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Each service's container state and health."""
    from dataclasses import asdict

    from rich.table import Table

    from deeplops.dockerbox import stack

    client = stack.connect()
    rows = stack.status(client, name)
    if as_json:
        print(json.dumps({"sandbox": name, "services": [asdict(r) for r in rows]}, indent=2))
        return
    if not rows:
        out.print(f"sandbox {name}: not running")
        return
    table = Table(title=f"sandbox {name}")
    for column in ("service", "state", "health", "address"):
        table.add_column(column)
    for r in rows:
        health = "[green]healthy[/]" if r.healthy else "[red]unhealthy[/]"
        table.add_row(r.service, r.state, health, r.ip or "-")
    out.print(table)


@sandbox_app.command("calibrate")
def sandbox_calibrate(
    out_path: Annotated[Path, typer.Option("--out", help="Write the measurements here.")] = Path("calibration.json"),
) -> None:
    """Measure the real system (timings, symptoms of every fault) and derive the simulator's parameters.

    Takes about three minutes. The repository keeps its result in sandbox/calibration.json, and
    SimParams' defaults are the parameters derived there.
    """
    from deeplops.dockerbox.calibrate import calibrate

    result = calibrate(log=lambda line: err.print(line))
    _write_json(out_path, result)
    for key, value in result["sim_params"].items():
        out.print(f"{key:>20} = {value}")


@sandbox_app.command("compare")
def sandbox_compare(
    order: Annotated[str, typer.Option("--order", help="Order policy to replay the scenarios with.")] = "runbook",
    scenario: Annotated[
        list[Path] | None, typer.Option("--scenario", help="Scenario file (repeatable) [default: every shipped one].")
    ] = None,
    json_path: JsonOpt = None,
) -> None:
    """Replay scenarios on the simulator and on real containers, and check that they agree.

    Agreement: |availability difference| <= 0.05, |mean MTTR difference| <= 2 ticks, and the same
    number of unrecovered faults. Exits 1 when a scenario disagrees or its hypothesis fails. Takes as many seconds as
    the scenarios have ticks.
    """
    from rich.table import Table

    from deeplops import agreement
    from deeplops.policies import Role, load_policy
    from deeplops.scenario import load_scenario, shipped_scenarios

    load_policy(order, Role.ORDER)  # a bad name fails before anything starts
    scenarios = [load_scenario(p) for p in (scenario or shipped_scenarios())]
    rows = agreement.compare(scenarios, order, on_scenario=lambda name, backend: err.print(f"{name} on {backend}"))
    table = Table(title=f"sim vs docker, order={order}")
    columns = ("scenario", "avail sim", "avail docker", "MTTR sim", "MTTR docker", "unrec sim/docker",
               "hypothesis sim/docker", "agree")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for r in rows:
        mttr = [f"{m:.1f}" if m is not None else "-" for m in r.mttr_mean]
        verdict = "[green]yes[/]" if r.agrees else "[red]no[/]"
        avail = [f"{a:.3f}" for a in r.availability]
        held = "/".join("met" if h else "[red]NOT met[/]" for h in r.hypothesis)
        table.add_row(r.scenario, *avail, *mttr, f"{r.unrecovered[0]}/{r.unrecovered[1]}", held, verdict)
    out.print(table)
    _write_json(json_path, {"order": order, "scenarios": [
        {"scenario": r.scenario, "availability": list(r.availability), "mttr_mean": list(r.mttr_mean),
         "unrecovered": list(r.unrecovered), "hypothesis_met": list(r.hypothesis), "agrees": r.agrees}
        for r in rows]})  # fmt: skip
    if not all(r.agrees and all(r.hypothesis) for r in rows):
        raise typer.Exit(1)


def _check_backend(backend: str) -> None:
    from deeplops.sandbox import BACKENDS

    if backend not in BACKENDS:  # fail before any work
        raise SandboxError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")


def _check_count(option: str, value: int | None, minimum: int = 1) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"{option} must be >= {minimum}, got {value}")


def _write_json(path: Path | None, result: dict[str, Any]) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(path)  # whole or nothing
    except OSError as exc:
        raise ConfigError(f"--json {path}: cannot write ({exc.strerror})") from None
    out.print(f"wrote {path}")


class _Progress:
    """A progress bar over env-ticks on the terminal; silent when output is not a terminal."""

    def __init__(self, total: int, label: str) -> None:
        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=err, transient=True, disable=not err.is_terminal,
        )  # fmt: skip
        self._task = self._bar.add_task(label, total=total)

    def __enter__(self) -> Any:
        self._bar.__enter__()
        return lambda n: self._bar.advance(self._task, n)

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)  # type: ignore[arg-type]


def main() -> None:
    """Entry point: bad input exits 2 with one line on stderr, never a traceback."""
    try:
        code = app(standalone_mode=False, prog_name="deeplops")  # returns typer.Exit's code instead of exiting
    except typer.TyperException as exc:  # bad usage: unknown option, missing argument, wrong type
        ctx = getattr(exc, "ctx", None)
        command = f"deeplops {ctx.info_name}" if ctx is not None and ctx.parent is not None else "deeplops"
        print(f"deeplops: error: {exc.format_message()} (see '{command} --help')", file=sys.stderr)
        sys.exit(2)
    except DeeplopsError as exc:
        print(f"deeplops: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("deeplops: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
