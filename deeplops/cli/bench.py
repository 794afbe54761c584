"""``deeplops bench``: env steps/s, and the sidecar's trials on real containers."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from deeplops import bounds
from deeplops.cli.common import JsonOpt, app, check_json, err, out, write_json
from deeplops.errors import ConfigError

bench_app = typer.Typer(
    help="Measure: env steps/s (bare 'deeplops bench'), training (bench train), or the sidecar on real containers "
    "(bench sidecar, bench soak).",
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

    bounds.number(seconds, "--seconds", 0.0, bounds.MAX_SECONDS, open_low=True)
    check_json(json_path)
    with err.status("measuring..."):
        result = b.run(seconds=seconds)
    table = Table(title=f"deeplops bench (CartPole-v1: {result.cartpole_steps_per_s:,.0f} steps/s)")
    for column in ("env", "n_envs", "env-steps/s", "× CartPole"):
        table.add_column(column, justify="left" if column == "env" else "right")
    for r in result.rates:
        table.add_row(r.name, str(r.n_envs), f"{r.steps_per_s:,.0f}", f"{r.ratio_to_cartpole:.2f}")
    out.print(table)
    write_json(json_path, result.to_json())


@bench_app.command("train")
def bench_train(
    json_path: JsonOpt = None,
    seconds: Annotated[float, typer.Option("--seconds", help="Measuring time of each trainer.")] = 10.0,
) -> None:
    """Order-agent training transitions/s (rollout and update, end to end) beside SB3 PPO on CartPole."""
    from rich.table import Table

    from deeplops import bench as b

    bounds.number(seconds, "--seconds", 0.0, bounds.MAX_SECONDS, open_low=True)
    check_json(json_path)
    with err.status("measuring the order agent's training, then SB3 PPO on CartPole..."):
        result = b.train(seconds)
    table = Table(title="deeplops bench train")
    for column in ("trainer", "envs", "transitions/s"):
        table.add_column(column, justify="left" if column == "trainer" else "right")
    table.add_row("order agent (selfplay)", str(result.n_envs), f"{result.order_transitions_per_s:,.0f}")
    table.add_row("SB3 PPO, CartPole-v1", "8", f"{result.cartpole_ppo_transitions_per_s:,.0f}")
    out.print(table)
    out.print(f"ratio to CartPole PPO: {result.ratio:.2f}")
    write_json(json_path, result.to_json())


STACKS = {"sandbox": "a shop sandbox", "compose": "the store Compose example"}
"""What ``bench sidecar --stack`` runs the trial on."""


@bench_app.command("sidecar")
def bench_sidecar(
    policy: Annotated[
        list[str] | None,
        typer.Option(
            "--policy", help="Sidecar policy (repeatable); 'none' is no sidecar [default: pretrained, autoheal, none]."
        ),
    ] = None,
    cap: Annotated[
        float,
        typer.Option("--cap", help="Seconds a fault may take to recover before it counts as never (at most 3600)."),
    ] = 30.0,
    stack: Annotated[
        str,
        typer.Option(
            "--stack",
            help="sandbox: a live shop sandbox, faults through deeplops; compose: the store Compose example "
            "(sandbox/compose/store), faults through Docker and docker-compose.",
        ),
    ] = "sandbox",
    json_path: JsonOpt = None,
) -> None:
    """Detection and recovery per fault type on a live stack, one fault at a time, per policy (~5 min).

    Detection: injection to the sidecar's first repair. Recovery: injection to every service
    healthy with the SLO met, as the sidecar measures it. Needs root and a Docker engine
    (--stack compose: docker-compose too).
    """
    from rich.table import Table
    from rich.text import Text

    from deeplops.sidecar import composetrial, trial

    if stack not in STACKS:
        raise ConfigError(f"--stack must be one of {', '.join(STACKS)}, got {bounds.shown(stack)}")
    runner = composetrial if stack == "compose" else trial
    check_json(json_path)
    found = runner.incidents(policy or ["pretrained", "autoheal", trial.NONE], cap, log=lambda line: err.print(line))
    table = Table(title=f"sidecar on {STACKS[stack]}: seconds from injection to detection / recovery")
    table.add_column("policy")
    faults = [f"{f.label} {t}" for f, t in runner.INCIDENTS]
    for column in faults:
        table.add_column(column, justify="right")
    for name in dict.fromkeys(i.policy for i in found):
        cells = {f"{i.fault} {i.target}": i for i in found if i.policy == name}
        table.add_row(Text(name), *(_incident_cell(cells[f], cap) for f in faults))
    out.print(table)
    write_json(json_path, {"stack": stack, "cap_s": cap, "incidents": [vars(i) for i in found]})


def _incident_cell(i: Any, cap: float) -> str:
    det = "-" if i.detection_s is None else f"{i.detection_s:.1f}"
    rec = f"never ({cap:.0f} s)" if i.recovery_s is None else f"{i.recovery_s:.1f}"
    return f"{det} / {rec}"


@bench_app.command("soak")
def bench_soak(
    policy: Annotated[str, typer.Option("--policy", help="The sidecar's policy.")] = "pretrained",
    minutes: Annotated[float, typer.Option("--minutes", help="How long to run (at most a day).")] = 10.0,
    gap: Annotated[
        str, typer.Option("--gap", help="Seconds between faults, MIN,MAX with 0 < MIN <= MAX (uniformly random).")
    ] = "10,30",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fault schedule.")] = 0,
    json_path: JsonOpt = None,
) -> None:
    """The sidecar process on a live shop sandbox under random chaos, for minutes; exits 1 if it fails.

    It fails if the sidecar dies, does not exit 0 on SIGTERM, or its audit log misses a decision,
    repair, suppression or error its counters have. Resident memory is sampled every 10 s. Needs
    root and a Docker engine.
    """
    from deeplops.sidecar import trial

    minutes = bounds.number(minutes, "--minutes", 0.0, bounds.MAX_SECONDS / 60, open_low=True)
    try:
        low, high = (float(x) for x in gap.split(","))
    except ValueError:
        raise ConfigError(f"--gap expects MIN,MAX seconds, got {bounds.shown(gap)}") from None
    check_json(json_path)
    result = trial.soak(policy, minutes * 60, (low, high), seed, log=lambda line: err.print(line)).to_dict()
    out.print(
        f"soak of {escape(policy)}: {result['seconds'] / 60:.1f} min, {result['faults_injected']} faults, "
        f"availability {result['availability']:.3f}\n"
        f"  alive throughout: {result['alive']}; SIGTERM: exit {result['exit_code']} in {result['stop_s']:.2f} s\n"
        f"  resident memory: {result['rss_mb_start']:.1f} MiB at start, {result['rss_mb_end']:.1f} at end, "
        f"{result['rss_mb_max']:.1f} at most\n"
        f"  audit log: {result['audit']}\n  counted:   {result['counted']}\n"
        f"  every decision audited: {result['every_decision_audited']}"
    )
    write_json(json_path, result)
    if not (result["alive"] and result["exit_code"] == 0 and result["every_decision_audited"]):
        raise typer.Exit(1)
