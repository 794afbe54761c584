"""``deeplops sidecar``: heal a live stack with a policy, behind guard rails."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from deeplops import bounds
from deeplops.cli.common import app, err
from deeplops.errors import ConfigError


@app.command()
def sidecar(
    policy: Annotated[
        str,
        typer.Option("--policy", help="Order policy: a saved agent's path, or a baseline (runbook, autoheal, k8s)."),
    ],
    project: Annotated[
        str,
        typer.Option(
            "--project",
            help="Watch containers labelled deeplops.sandbox=NAME or com.docker.compose.project=NAME; one sidecar "
            "per project (a lock in /run/deeplops).",
        ),
    ],
    interval: Annotated[
        float,
        typer.Option(
            "--interval", help="Seconds between decisions, 0.1 to 3600 (trained agents count one tick a second)."
        ),
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
    ] = "restart,clean_disk,rate_limit,rollback",
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
    metrics_address: Annotated[
        str,
        typer.Option(
            "--metrics-address", help="IP address /metrics and /healthz listen on (0.0.0.0: every interface)."
        ),
    ] = "127.0.0.1",
    audit_log: Annotated[
        Path | None,
        typer.Option("--audit-log", help="Append the JSON audit log here, mode 0600 [default: standard output]."),
    ] = None,
    audit_max_mb: Annotated[
        float, typer.Option("--audit-max-mb", help="Rotate the audit log past this many MiB (to PATH.1, PATH.2, ...).")
    ] = 100.0,
    audit_keep: Annotated[int, typer.Option("--audit-keep", help="Rotated audit files kept.")] = 5,
) -> None:
    """Heal a live stack with a trained order agent, behind guard rails, until SIGTERM or Ctrl-C.

    Every --interval it measures the stack as the environment does, asks the policy for a repair,
    and applies it through the Docker backend unless a guard holds it back: the allowlist, the rate
    limit, the per-service cooldown, or the circuit breaker (which opens, and alerts, when repairs
    stop restoring health). Every decision goes to the JSON audit log.
    """
    import signal
    import threading

    from deeplops.actions import Role
    from deeplops.faults import Repair
    from deeplops.policies import load_policy
    from deeplops.sidecar.daemon import Sidecar, SidecarConfig
    from deeplops.sidecar.guards import GuardConfig

    repairs = tuple(Repair.parse(r.strip(), ConfigError) for r in allow.split(",") if r.strip())
    if Repair.NOOP in repairs:
        raise ConfigError("--allow lists repairs: restart, clean_disk, rate_limit, recreate, rollback; got noop")
    if Repair.RECREATE in repairs and not allow_recreate:
        raise ConfigError("--allow recreate loses the service's data: add --allow-recreate to mean it")
    if allow_recreate and Repair.RECREATE not in repairs:
        repairs += (Repair.RECREATE,)
    bounds.whole(metrics_port, "--metrics-port", 0, bounds.MAX_PORT)  # 0 here is none, not any free port
    guards = GuardConfig(allow=repairs, max_per_minute=max_actions, cooldown_s=cooldown, breaker_failures=breaker,
                         max_cooldown_s=max(300.0, cooldown))  # fmt: skip
    config = SidecarConfig(project, interval, dry_run, guards, verify, metrics_port or None, metrics_address,
                           audit_log, audit_max_mb, audit_keep)  # fmt: skip
    daemon = Sidecar(load_policy(policy, Role.ORDER), config, log=lambda line: err.print(line))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    port = f", metrics on {metrics_address}:{daemon.server.port}" if daemon.server is not None else ""
    err.print(f"sidecar: watching {project} with {policy}{' (dry run)' if dry_run else ''}{port}")
    try:
        daemon.run(stop)
    finally:
        daemon.close()
    err.print("sidecar: stopped")
    # All is written and closed. Skip the interpreter's teardown: with torch loaded it takes over a
    # second, and a sidecar must be gone within 2 s of SIGTERM.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
