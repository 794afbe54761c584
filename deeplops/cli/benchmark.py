"""``deeplops benchmark``: rank order policies on the fixed protocol of ``deeplops.benchmark``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from deeplops import bounds, outputs
from deeplops.cli.common import Bar, JsonOpt, SimOpt, app, check_count, check_json, err, on_interrupt, out, sim_params

if TYPE_CHECKING:
    from rich.table import Table

    from deeplops.benchmark import Leaderboard


@app.command()
def benchmark(
    order: Annotated[
        list[str] | None,
        typer.Option(
            "--order",
            help="Order policy to rank: noop, random, autoheal, k8s, runbook, oracle, pretrained, or a saved "
            "agent's path (repeatable) [default: all of those names].",
            show_default=False,
        ),
    ] = None,
    episodes: Annotated[
        int | None,
        typer.Option(
            "--episodes", help="Episodes per suite, split evenly over its systems [default: 32].", show_default=False
        ),
    ] = None,
    json_path: JsonOpt = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="Print the leaderboard as a Markdown table (as in the README).")
    ] = False,
    sim: SimOpt = None,
) -> None:
    """Rank order policies on a fixed protocol of systems, faults and dynamics they never trained on.

    Every policy plays every suite: **random-topologies** (8 random topologies never trained on),
    **bank** (never trained on), **real-software** (store and payments: PostgreSQL, Redis, nginx,
    app and worker kinds, never trained on), **scenarios** (every shipped scenario); on shop and bank,
    **slow-restarts** and **very-slow-restarts** (restarts take 3 and 8 ticks), **noisy-probes**
    (15% of health results flipped), **lagging-probes** (2 ticks late), **noisy-lagging** (10%
    flipped, 3 ticks late), **busy-deploys** (benign deploys at 0.005 per service and tick); and
    **trained-chaos** (shop against the shipped chaos agent). Chaos is
    random unless said; episode seeds start at 1,000,000; the same arguments give the same figures.
    --sim replaces the calibrated dynamics every suite starts from.

    Per policy and suite: availability, mean MTTR, unrecovered faults, repairs per injected fault
    (more than 2 is a repair storm, marked ⚠) and data loss. A policy above the oracle by more than
    0.01 availability is flagged (†): the oracle reads the true faults and is meant to be the bound.
    """
    from deeplops import benchmark as bm
    from deeplops.actions import Role
    from deeplops.policies import load_policy

    check_count("--episodes", episodes, maximum=bounds.MAX_SUITE_EPISODES)
    episodes = episodes or bm.DEFAULT_EPISODES
    check_json(json_path)
    params = sim_params(sim, "sim")
    policies = {name: load_policy(name, Role.ORDER) for name in dict.fromkeys(order or bm.DEFAULT_ORDER)}
    suites = bm.protocol(episodes, params)
    on_interrupt("nothing was written")
    with Bar(len(policies) * sum(s.env_ticks for s in suites), "benchmark") as advance:
        board = bm.run(policies, suites, episodes, None if sim is None else str(sim), on_tick=advance)
    if markdown:
        out.print(board.markdown(), end="", soft_wrap=True, markup=False, highlight=False)
    else:
        out.print(_table(board))
        out.print(_ranking(board))
    notes = err if markdown else out  # a Markdown table stays clean
    for a in board.above_oracle():
        notes.print(f"note: {escape(a.policy)} beats the oracle on {a.suite}: availability {a.availability:.3f} "
                  f"vs {a.oracle:.3f} (the oracle is meant to be the upper bound)")  # fmt: skip
    if json_path is not None:
        outputs.write_text(json_path, json.dumps(board.to_json(), indent=2) + "\n", "--json")
        notes.print(f"wrote {escape(str(json_path))}")


def _table(board: Leaderboard) -> Table:
    """Every policy's figures, a section per suite: policies are compared within a suite."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"deeplops benchmark: {board.episodes} episodes per suite")
    table.add_column("suite", no_wrap=True)
    table.add_column("policy", no_wrap=True)
    for column in ("avail", "MTTR", "unrec", "relapses", "repairs/fault", "data loss"):
        table.add_column(column, justify="right")
    above = {(a.policy, a.suite) for a in board.above_oracle()}
    for suite in board.suites:
        for i, policy in enumerate(board.policies):
            score = board.scores[policy][suite.id]
            m, per_fault = score.summary, score.repairs_per_fault
            table.add_row(
                suite.id if i == 0 else "",
                Text(policy),  # a path as given, never markup
                f"{m.availability:.3f}" + (" †" if (policy, suite.id) in above else ""),
                "-" if m.mttr_mean is None else f"{m.mttr_mean:.1f}",
                str(m.unrecovered),
                str(m.relapses),
                ("-" if per_fault is None else f"{per_fault:.2f}") + (" ⚠" if score.storm else ""),
                str(m.data_loss),
                end_section=i == len(board.policies) - 1,
            )
    return table


def _ranking(board: Leaderboard) -> Table:
    """The policies by mean availability over the suites, with where each stormed."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="ranking: mean availability over the suites (⚠ storm: > 2 repairs per fault)")
    table.add_column("#", justify="right")
    table.add_column("policy", no_wrap=True)
    table.add_column("mean avail", justify="right")
    table.add_column("⚠ storms on")
    for rank, policy in enumerate(board.ranking(), 1):
        storms = board.storms(policy)
        table.add_row(str(rank), Text(policy), f"{board.mean_availability(policy):.3f}", ", ".join(storms) or "-")
    return table
