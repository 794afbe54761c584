"""``deeplops sandbox``: real containers: images, up, down, status, calibrate, compare."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from deeplops import outputs
from deeplops.cli.common import JsonOpt, SeedOpt, app, check_json, err, on_interrupt, out, write_json

if TYPE_CHECKING:
    from deeplops.dockerbox.stack import Found

sandbox_app = typer.Typer(
    help="Real containers: build the service image, bring a topology up or down, see its state.",
    no_args_is_help=True,
)
app.add_typer(sandbox_app, name="sandbox")
NameOpt = Annotated[
    str,
    typer.Option(
        "--name",
        help="Sandbox name: its network, and the prefix of its containers. Lower-case letters, digits, '-' and "
        "'_', starting with a letter or digit, at most 31 characters.",
    ),
]


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
    """Start a topology as containers, each labelled deeplops.sandbox=NAME and deeplops.service=SERVICE.

    Stale sandboxes (made for a process that is gone, with its reaper) are removed first. Ctrl-C or
    SIGTERM at any point leaves nothing of the new sandbox behind.
    """
    import time

    from deeplops.dockerbox import host, image, stack
    from deeplops.topology import load_topology

    host.check_name(name)
    topology = load_topology(env)
    stack.check_memory(topology)
    client = stack.connect()
    on_interrupt(f"nothing of sandbox {name} is left")
    with stack.terminate_unwinds():
        stack.reap_stale(client, log=lambda line: err.print(line, markup=False))
        tag = image.ensure_image(client, log=lambda line: err.print(line))
        data = stack.data_fractions(topology, seed)
        start = time.monotonic()
        stack.up(client, topology, name, tag, data)  # whole or nothing: it removes what it made on failure
    took = time.monotonic() - start
    out.print(f"sandbox {name}: {topology.n_services} services of {topology.name} up in {took:.1f} s")


@sandbox_app.command("down")
def sandbox_down(
    name: NameOpt = "deeplops",
    all_: Annotated[bool, typer.Option("--all", help="Remove every deeplops sandbox on this engine.")] = False,
    stale: Annotated[
        bool, typer.Option("--stale", help="Remove every sandbox whose owning process is gone (see 'status --all').")
    ] = False,
) -> None:
    """Remove a sandbox's containers, network, volumes and blocks, including what a crashed run left."""
    from deeplops.dockerbox import host, stack

    host.check_name(name)
    client = stack.connect()
    if all_:
        names = sorted(stack.sandboxes(client))
    elif stale:
        names = [found.sandbox for found in stack.survey(client) if found.stale]
        if not names:
            out.print("no stale sandboxes")
    else:
        names = [name]
    for sandbox in names:
        removed = stack.down(sandbox, client)
        out.print(f"sandbox {sandbox}: " + (f"removed {len(removed)} item(s)" if removed else "nothing to remove"))


@sandbox_app.command("status")
def sandbox_status(
    name: NameOpt = "deeplops",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    all_: Annotated[
        bool, typer.Option("--all", help="List every sandbox on this engine, its owner, and whether it is stale.")
    ] = False,
) -> None:
    """Each service's kind, container state, health and running programs. A line on stderr names
    each stale sandbox."""
    from dataclasses import asdict

    from rich.table import Table

    from deeplops.dockerbox import host, stack

    host.check_name(name)
    client = stack.connect()
    found = stack.survey(client)
    for s in found:
        if s.stale:
            err.print(f"sandbox {s.sandbox} is stale: its owner, process {s.owner}, is gone; "
                      "'deeplops sandbox down --stale' removes it", markup=False)  # fmt: skip
    if all_:
        _print_survey(found, as_json)
        return
    rows = stack.status(client, name)
    if as_json:
        stale = any(s.stale for s in found if s.sandbox == name)
        print(json.dumps({"sandbox": name, "stale": stale, "services": [asdict(r) for r in rows]}, indent=2))
        return
    if not rows:
        out.print(f"sandbox {name}: not running")
        return
    table = Table(title=f"sandbox {name}")
    for column in ("service", "kind", "state", "health", "processes", "address"):
        table.add_column(column)
    for r in rows:
        health = "[green]healthy[/]" if r.healthy else "[red]unhealthy[/]"
        table.add_row(r.service, r.kind, r.state, health, " ".join(r.processes) or "-", r.ip or "-")
    out.print(table)


def _print_survey(found: list[Found], as_json: bool) -> None:
    """``sandbox status --all``: every sandbox, its owner and whether it is stale."""
    from dataclasses import asdict

    from rich.table import Table

    if as_json:
        print(json.dumps({"sandboxes": [asdict(s) for s in found]}, indent=2))
        return
    if not found:
        out.print("no sandboxes")
        return
    table = Table(title="sandboxes")
    for column in ("sandbox", "containers", "owner", "state"):
        table.add_column(column)
    for s in found:
        owner = "sandbox up" if s.owner is None else f"process {s.owner}"
        table.add_row(s.sandbox, str(s.containers), owner, "[red]stale[/]" if s.stale else "live")
    out.print(table)


@sandbox_app.command("calibrate")
def sandbox_calibrate(
    out_path: Annotated[Path, typer.Option("--out", help="Write the measurements here.")] = Path("calibration.json"),
) -> None:
    """Measure the real system (timings, symptoms of every fault) and derive the simulator's parameters.

    The generic service is measured on shop, then every other kind (PostgreSQL, Redis, nginx, the
    app, the worker) on store, into the kinds' profiles. Takes about sixteen minutes. The
    repository keeps its result in sandbox/calibration.json, and SimParams' defaults are the
    parameters derived there.
    """
    from deeplops.dockerbox.calibrate import calibrate

    outputs.check_file(out_path, "--out")
    on_interrupt("nothing was written; its containers are removed")
    result = calibrate(log=lambda line: err.print(line))
    write_json(out_path, result, "--out")
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
    from rich.text import Text

    from deeplops import agreement
    from deeplops.actions import Role
    from deeplops.policies import load_policy
    from deeplops.scenario import load_scenario, shipped_scenarios

    load_policy(order, Role.ORDER)  # a bad name fails before anything starts
    check_json(json_path)
    scenarios = [load_scenario(p) for p in (scenario or shipped_scenarios())]
    on_interrupt("nothing was written; its containers are removed")
    rows = agreement.compare(scenarios, order, on_scenario=lambda name, backend: err.print(f"{name} on {backend}"))
    table = Table(title=Text(f"sim vs docker, order={order}"))
    columns = ("scenario", "avail sim", "avail docker", "MTTR sim", "MTTR docker", "unrec sim/docker",
               "hypothesis sim/docker", "agree")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for r in rows:
        mttr = [f"{m:.1f}" if m is not None else "-" for m in r.mttr_mean]
        verdict = "[green]yes[/]" if r.agrees else "[red]no[/]"
        avail = [f"{a:.3f}" for a in r.availability]
        held = "/".join("met" if h else "[red]NOT met[/]" for h in r.hypothesis)
        table.add_row(Text(r.scenario), *avail, *mttr, f"{r.unrecovered[0]}/{r.unrecovered[1]}", held, verdict)
    out.print(table)
    write_json(json_path, {"order": order, "scenarios": [
        {"scenario": r.scenario, "availability": list(r.availability), "mttr_mean": list(r.mttr_mean),
         "unrecovered": list(r.unrecovered), "hypothesis_met": list(r.hypothesis), "agrees": r.agrees}
        for r in rows]})  # fmt: skip
    if not all(r.agrees and all(r.hypothesis) for r in rows):
        raise typer.Exit(1)
