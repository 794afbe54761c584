"""What every command shares: the Typer app, the consoles, common options, checks and outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from deeplops import bounds, outputs
from deeplops.backends import BACKENDS
from deeplops.errors import ConfigError, SandboxError
from deeplops.version import VERSION

app = typer.Typer(
    name="deeplops",
    help="Chaos-engineering reinforcement learning: a chaos agent breaks microservices, an order agent heals them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # docstring paragraphs rewrap to the terminal
)
out = Console()
err = Console(stderr=True)
if not out.is_terminal:  # files and pipes get whole tables, not 80-column ones
    out.width = 120


def _version(value: bool) -> None:
    if value:
        out.print(f"deeplops {VERSION}")
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
SimOpt = Annotated[
    Path | None,
    typer.Option(
        "--sim",
        help="A YAML file of simulator fields to change from the calibrated defaults (SimParams), "
        "e.g. 'restart_ticks: 3'.",
    ),
]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the metrics as one JSON object to this file.")]


def check_backend(backend: str) -> None:
    """A known backend name, checked before any work."""
    if backend not in BACKENDS:  # fail before any work
        raise SandboxError(f"unknown backend {backend!r}: expected one of {', '.join(BACKENDS)}")


def check_count(option: str, value: int | None, minimum: int = 1, maximum: int = bounds.MAX_STEPS) -> None:
    """A whole-number option within its documented bounds (None: not given)."""
    if value is not None:
        bounds.whole(value, option, minimum, maximum)


def check_seed(seed: int, episodes: int = 1) -> None:
    """A seed whose episodes' seeds (``seed + k``) all stay within the documented bound."""
    bounds.whole(seed, "--seed", 0, bounds.MAX_SEED)
    if seed + episodes - 1 > bounds.MAX_SEED:
        raise ConfigError(f"--seed {seed} with {episodes} episodes reaches seed {seed + episodes - 1}: "
                          f"expected seed + episodes - 1 <= {bounds.MAX_SEED}")  # fmt: skip


def sim_params(path: Path | None, backend: str) -> Any:
    """The SimParams of ``--sim FILE`` (None when not given), checked before any work."""
    if path is None:
        return None
    if backend != "sim":
        raise ConfigError(f"--sim applies to the simulator only: expected --backend sim, got {backend}")
    from deeplops.sim import SimParams

    return SimParams.from_file(path)


def check_json(path: Path | None) -> None:
    """Fail before any work when ``--json`` cannot be written later."""
    if path is not None:
        outputs.check_file(path, "--json")


def write_json(path: Path | None, result: dict[str, Any], option: str = "--json") -> None:
    """Write ``result`` as one JSON object to ``path`` (whole, or into a device or pipe as it is)."""
    if path is None:
        return
    outputs.write_text(path, json.dumps(result, indent=2) + "\n", option)
    out.print(f"wrote {escape(str(path))}")


_kept = ["nothing was written"]


def on_interrupt(kept: str) -> None:
    """Say what a Ctrl-C of the running command leaves behind (printed if it comes)."""
    _kept[0] = kept


class Bar:
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


def interrupted_note() -> str:
    """What the running command said a Ctrl-C leaves behind."""
    return _kept[0]
