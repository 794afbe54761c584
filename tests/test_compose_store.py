"""The store Compose example (sandbox/compose/store): that it runs each service as the sandbox does
and declares the repairs the sidecar may apply (pure, from the file), that ``bench sidecar --stack``
refuses bad input before any container, and (docker, slow) that its sidecar service heals it."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_up import compose_up

STORE = Path(__file__).parent.parent / "sandbox" / "compose" / "store" / "docker-compose.yml"


def store_services(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The example's services as docker-compose reads them, ``${VAR:-default}`` taken from ``env``."""
    given = env or {}
    text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: given.get(m[1], m[2]), STORE.read_text())
    return yaml.safe_load(text)["services"]


def test_the_store_example_runs_each_service_as_the_sandbox_does():
    from deeplops.dockerbox import releases, stack
    from deeplops.system import MEMORY_MB
    from deeplops.topology import load_topology

    services = store_services()
    store = load_topology("store")
    kinds = dict(zip(store.names, store.kinds, strict=True))
    assert {s for s, spec in services.items() if spec.get("labels", {}).get("deeplops.ignore") != "true"} == set(
        store.names
    )
    for s in store.services:
        spec = services[s.name]
        assert spec["command"] == stack.PROGRAMS[s.kind], s.name
        assert spec["environment"] == stack.environment(s, kinds) | releases.environment(releases.History()), s.name
        assert spec["image"] == "deeplops/service:latest" and spec["cpus"] == stack.CPU_LIMIT
        assert spec["mem_limit"] == spec["memswap_limit"] == f"{MEMORY_MB + s.disk_mb}m", s.name
        assert "/ping" in " ".join(spec["healthcheck"]["test"])
        labels = spec.get("labels", {})
        assert labels.get("deeplops.depends_on", "") == ",".join(s.depends_on), s.name
        assert (labels.get("deeplops.entry") == "true") == s.entry, s.name


def test_the_store_example_declares_its_repairs_and_a_real_small_disk_for_the_queue():
    services = store_services()
    labels = {s: spec.get("labels", {}) for s, spec in services.items()}
    assert labels["queue"]["deeplops.clean"] == "/data/redis/temp-*"  # where launcher.py's Redis keeps its files
    assert {s for s, ls in labels.items() if ls.get("deeplops.rollback") == "true"} == {"app", "worker", "gateway"}
    assert {s for s, ls in labels.items() if ls.get("deeplops.recreate") == "true"} == {"cache"}
    volumes = yaml.safe_load(STORE.read_text())["volumes"]
    assert volumes["queue-data"]["driver_opts"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=32m"}
    # A holder keeps the tmpfs mounted while queue restarts; it is no service of the stack.
    assert "queue-data:/data" in services["queue-disk"]["volumes"]
    assert labels["queue-disk"]["deeplops.ignore"] == labels["sidecar"]["deeplops.ignore"] == "true"
    # A bad deploy of app is a docker-compose up with its release's variables.
    app = store_services({"STORE_APP_RELEASE": "r2", "STORE_APP_BROKEN": "1"})["app"]["environment"]
    assert (app["DEEPLOPS_RELEASE"], app["DEEPLOPS_RELEASE_BROKEN"]) == ("r2", "1")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--stack", "bad"), "--stack must be one of sandbox, compose, got 'bad'"),
        (("--stack", ""), "--stack must be one of sandbox, compose, got ''"),
        (("--stack", "compose", "--cap", "0"), "--cap (seconds) must be a number in (0, 3600], got 0.0"),
        (("--stack", "compose", "--policy", "nope"), "unknown order policy 'nope'"),
    ],
)
def test_bad_bench_stack_input_is_one_line_and_exit_2_before_any_container(cli, args, says):
    result = cli("bench", "sidecar", *args)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert result.err.startswith("deeplops: error: ") and says in result.err and "Traceback" not in result.err


# -- on a real engine ------------------------------------------------------------------------


@pytest.fixture
def store(docker_engine) -> Iterator[tuple[str, Callable[..., str]]]:
    """The store example brought up with its sidecar service under a project of its own:
    (project, a docker-compose runner). Taken down with its volumes afterwards."""
    project = f"dlstore{os.getpid()}"
    with compose_up(STORE, project) as (_, compose):
        yield project, compose


@pytest.mark.docker
@pytest.mark.slow
def test_the_store_example_comes_up_healthy_and_its_sidecar_restarts_a_paused_cache(store):
    from deeplops.dockerbox import stack

    project, _ = store
    client = stack.connect()
    sidecar = client.containers.get(f"{project}_sidecar_1")

    def audit() -> list[dict]:
        lines = sidecar.logs(stdout=True, stderr=False).decode().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {sidecar.logs()[-1500:]!r}"
            time.sleep(0.5)

    until(lambda: any(r["event"] == "attached" for r in audit()), 60, "the sidecar to attach")
    # The queue's disk holder and the sidecar itself are no services of the stack (deeplops.ignore).
    attached = next(r for r in audit() if r["event"] == "attached")
    assert sorted(attached["services"]) == ["app", "cache", "db", "gateway", "queue", "worker"]
    until(lambda: [r["slo"] for r in audit() if r["event"] == "decision"][-3:] == [True] * 3, 60, "a healthy stack")
    # A paused cache: the sidecar in its container has no host PIDs, so it thaws and signals it
    # through the engine (a restart that once read its stale "paused" state and never signalled).
    cache = client.containers.get(f"{project}_cache_1")
    cache.pause()
    until(lambda: any(r.get("chose") == {"repair": "restart", "target": "cache"} and r["did"] == "applied"
                      for r in audit()), 30, "the sidecar to restart cache")  # fmt: skip
    until(lambda: any(r["event"] == "outcome" and r["target"] == "cache" and r["healed"] for r in audit()), 30,
          "the restart judged healed")  # fmt: skip
    assert not any(r.get("did") == "failed" for r in audit())
