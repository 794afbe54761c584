"""``deeplops scenario``: list the shipped drills, export one for other tools."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from deeplops import outputs
from deeplops.bounds import shown
from deeplops.cli.common import Bar, app, err, out
from deeplops.errors import ConfigError, ScenarioError

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
    from rich.text import Text

    from deeplops.actions import Role
    from deeplops.drill import run_drill
    from deeplops.policies import load_policy
    from deeplops.scenario import load_scenario, shipped_scenarios

    scenarios = [load_scenario(p) for p in shipped_scenarios()]
    policies = [(name, load_policy(name, Role.ORDER)) for name in dict.fromkeys(order or [])]
    columns = ["scenario", "env", "faults", "models"] + [f"{n} avail / MTTR" for n, _ in policies]
    rows = []
    with Bar(sum(s.ticks for s in scenarios) * len(policies), "replaying") as advance:
        for s in scenarios:
            faults = ", ".join(sorted({f.fault.label for f in s.faults}))
            cells = [s.name, s.topology.name, faults, s.description]
            for _, policy in policies:
                m = run_drill(s, "", policy, on_tick=advance).metrics
                mttr = "-" if m.mttr_mean is None else f"{m.mttr_mean:.1f}"
                cells.append(f"{m.availability:.3f} / {mttr}")
            rows.append(cells)
    if markdown:
        out.print("| " + " | ".join(columns) + " |", soft_wrap=True, markup=False)
        out.print("|" + "---|" * len(columns), soft_wrap=True)
        for cells in rows:
            out.print("| " + " | ".join(cells) + " |", soft_wrap=True, markup=False)
        return
    table = Table(title=f"{len(rows)} shipped scenarios")
    for c in columns:
        table.add_column(Text(c))
    for cells in rows:
        table.add_row(*map(Text, cells))
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
        raise ConfigError(f"--format must be chaostoolkit, got {shown(format_)}")
    if file.suffix not in (".yaml", ".yml"):
        raise ScenarioError(f"{file}: expected a scenario .yaml file, got {file.suffix or 'no extension'}")
    if output is not None:
        outputs.check_file(output, "--out")
    text = json.dumps(to_experiment(load_scenario(file)), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    outputs.write_text(output, text, "--out")
    err.print(f"wrote {escape(str(output))}")
