"""The Chaos Toolkit extension on a live sandbox: actions take effect for real, probes measure,
and ``chaos run`` of the example experiment completes with its steady state verified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deeplops.chaostoolkit import actions, probes
from deeplops.dockerbox import stack
from deeplops.errors import SandboxError

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]
EXAMPLE = Path(__file__).parent.parent / "examples" / "chaostoolkit-db-kill.json"


def started_at(name: str, service: str) -> str:
    container = stack.containers(stack.connect(), name)[service]
    return str(container.attrs["State"]["StartedAt"])


def test_actions_take_effect_and_probes_see_them(live):
    assert probes.slo_ok(live) and probes.service_healthy("db", live)
    actions.inject_fault("kill", "db", live)
    assert stack.containers(stack.connect(), live)["db"].status == "exited"
    assert not probes.service_healthy("db", live)
    assert not probes.slo_ok(live)  # api needs db: users are refused
    actions.repair("restart", "db", live)
    assert stack.containers(stack.connect(), live)["db"].status == "running"


def test_a_sandbox_that_is_not_there_is_a_clear_error():
    with pytest.raises(SandboxError, match="no live sandbox 'nothing-here'"):
        probes.slo_ok("nothing-here")


def test_chaos_run_of_the_example_completes_with_the_steady_state_verified(live, tmp_path):
    before = started_at(live, "db")
    journal = tmp_path / "journal.json"
    chaos = Path(sys.executable).with_name("chaos")
    result = subprocess.run(
        [str(chaos), "--no-log-file", "run", "--journal-path", str(journal), str(EXAMPLE)],
        env={**os.environ, "DEEPLOPS_SANDBOX": live}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    run = json.loads(journal.read_text())
    assert run["status"] == "completed" and not run["deviated"]
    assert run["steady_states"]["before"]["steady_state_met"] is True
    assert run["steady_states"]["after"]["steady_state_met"] is True
    assert [(a["activity"]["name"], a["status"]) for a in run["run"]] == [
        ("kill-the-database", "succeeded"),
        ("restart-the-database", "succeeded"),
        ("fill-the-queue-disk", "succeeded"),
        ("clean-the-queue-disk", "succeeded"),
    ]
    assert started_at(live, "db") != before  # the kill and the restart were real
