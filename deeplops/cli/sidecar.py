"""``deeplops sidecar``: heal a live stack with a policy, behind guard rails."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from deeplops import bounds
from deeplops.cli.common import app, err, out
from deeplops.errors import ConfigError

sidecar_app = typer.Typer(invoke_without_command=True)
app.add_typer(sidecar_app, name="sidecar")


@sidecar_app.callback()
def sidecar(
    ctx: typer.Context,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="Order policy: a saved agent's path, or a baseline (runbook, autoheal, k8s)."),
    ] = None,
    project: Annotated[
        str | None,
        typer.Option(
            "--project",
            help="Watch containers labelled deeplops.sandbox=NAME or com.docker.compose.project=NAME; one sidecar "
            "per project (a lock in /run/deeplops).",
        ),
    ] = None,
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
    notify: Annotated[
        list[str] | None,
        typer.Option(
            "--notify",
            help="Webhook URL (repeatable): every applied, failed or breaker-held repair and its outcome is "
            "POSTed as JSON with a Slack-compatible 'text', in the background, retried with back-off.",
        ),
    ] = None,
    approve: Annotated[
        str,
        typer.Option(
            "--approve",
            help="Repairs that wait for a human, comma-separated (e.g. recreate,rollback): each is logged, notified "
            "and served as a request, applied once approved ('deeplops sidecar approve ID').",
        ),
    ] = "",
    approval_timeout: Annotated[
        float, typer.Option("--approval-timeout", help="Seconds a request waits for an answer, and an answer holds.")
    ] = 300.0,
) -> None:
    """Heal a live stack with a trained order agent, behind guard rails, until SIGTERM or Ctrl-C.

    Every --interval it measures the stack as the environment does, asks the policy for a repair,
    and applies it through the Docker backend unless a guard holds it back: the allowlist, the rate
    limit, the per-service cooldown, or the circuit breaker (which opens, and alerts, when repairs
    stop restoring health). Every decision goes to the JSON audit log. Repairs listed in --approve
    wait for a human: 'deeplops sidecar approve ID --project NAME' answers them. On a Compose
    project a service may be restarted, and repaired as its labels declare: deeplops.clean (paths
    safe to delete), deeplops.rollback=true, deeplops.recreate=true (README, "Repairs declared by
    labels").
    """
    if ctx.invoked_subcommand is not None:
        return
    if policy is None or project is None:
        missing = "--policy" if policy is None else "--project"
        raise ConfigError(f"missing option {missing}: 'deeplops sidecar --policy POLICY --project NAME' heals a stack")
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
    approved = tuple(Repair.parse(r.strip(), ConfigError) for r in approve.split(",") if r.strip())
    if Repair.NOOP in approved:
        raise ConfigError("--approve lists repairs: restart, clean_disk, rate_limit, recreate, rollback; got noop")
    bounds.whole(metrics_port, "--metrics-port", 0, bounds.MAX_PORT)  # 0 here is none, not any free port
    guards = GuardConfig(allow=repairs, max_per_minute=max_actions, cooldown_s=cooldown, breaker_failures=breaker,
                         max_cooldown_s=max(300.0, cooldown))  # fmt: skip
    config = SidecarConfig(project, interval, dry_run, guards, verify, metrics_port or None, metrics_address,
                           audit_log, audit_max_mb, audit_keep, tuple(notify or ()), approved,
                           approval_timeout)  # fmt: skip
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


@sidecar_app.command("approve")
def approve_request(
    request_id: Annotated[str, typer.Argument(help="The request's id, as the sidecar logged and notified it.")],
    project: Annotated[str, typer.Option("--project", help="The project whose sidecar asked.")],
    deny: Annotated[bool, typer.Option("--deny", help="Deny it instead: the repair is held back.")] = False,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="The sidecar's HTTP port.")] = 9464,
    metrics_address: Annotated[
        str, typer.Option("--metrics-address", help="Where the sidecar's HTTP port is reached.")
    ] = "127.0.0.1",
) -> None:
    """Approve (or --deny) a repair the sidecar on PROJECT is holding for a human.

    Reads the project's approval token, which the sidecar wrote beside its lock (root's to read),
    and answers on the sidecar's HTTP port; the answer is in its audit log and notifications.
    """
    import json
    import urllib.error
    import urllib.request

    from deeplops.sidecar.approvals import read_token
    from deeplops.sidecar.lock import check_project
    from deeplops.sidecar.telemetry import check_address

    check_project(project)
    address = check_address(metrics_address)
    bounds.whole(metrics_port, "--metrics-port", 1, bounds.MAX_PORT)
    if not request_id.isalnum() or len(request_id) > 16:
        raise ConfigError(f"ID must be the request's id (up to 16 letters and digits), got {bounds.shown(request_id)}")
    token = read_token(project)
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{metrics_port}/approvals/{request_id.lower()}/{'deny' if deny else 'approve'}"
    request = urllib.request.Request(url, b"", {"Authorization": f"Bearer {token}"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise ConfigError(
            f"approval request {request_id}: {json.loads(exc.read() or b'{}').get('error', exc.reason)}"
        ) from None
    except OSError as exc:
        raise ConfigError(f"no sidecar answered on {host}:{metrics_port} ({getattr(exc, 'reason', exc)})") from None
    out.print(f"{answer['state']}: {answer['repair']} {answer['target']} (request {answer['id']})")
