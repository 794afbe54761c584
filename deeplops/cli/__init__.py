"""The ``deeplops`` command line: parse, call the library, report. Behaviour lives in the library.

``common`` holds the app and what commands share; each command module registers its commands on
the app when imported, in the order --help lists them.
"""

from __future__ import annotations

import sys

import typer

from deeplops.cli.common import app, interrupted_note
from deeplops.errors import DeeplopsError

# isort: off
from deeplops.cli import drills, learn, bench, benchmark, sidecar, scenarios, sandbox  # noqa: F401  (registers them, in this order)
# isort: on


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
        code = _INTERRUPTED
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    if code == _INTERRUPTED:  # typer turns Ctrl-C into this exit code
        print(f"deeplops: interrupted: {interrupted_note()}", file=sys.stderr)
    if isinstance(code, int) and code:
        sys.exit(code)


_INTERRUPTED = 130
"""Exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it."""
