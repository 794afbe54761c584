"""The Chaos Toolkit extension with releases: a bad deploy exported and read back as itself, and on
a live sandbox the extension's own actions deploy a bad release that a restart leaves failing and
a rollback ends."""

from __future__ import annotations

import json
import time

import pytest
from test_service import wait_for  # a real container takes its time to serve

from deeplops.chaostoolkit import actions, probes
from deeplops.chaostoolkit.experiment import read_experiment, to_experiment
from deeplops.dockerbox import releases, stack
from deeplops.faults import Fault
from deeplops.scenario import load_scenario, shipped_scenarios

RELEASE_DRILLS = [p for p in shipped_scenarios() if any(f.fault is Fault.BAD_DEPLOY for f in load_scenario(p).faults)]


def test_at_least_three_shipped_drills_deploy_a_bad_release():
    assert len(RELEASE_DRILLS) >= 3


@pytest.mark.parametrize("path", RELEASE_DRILLS, ids=lambda p: p.stem)
def test_an_exported_release_drill_reads_back_with_its_bad_deploys(tmp_path, path):
    scenario = load_scenario(path)
    experiment = to_experiment(scenario)
    calls = [a["provider"]["arguments"] for a in experiment["method"] if a["provider"]["func"] == "inject_fault"]
    assert {"fault": "bad_deploy"}.items() <= next(c for c in calls if c["fault"] == "bad_deploy").items()
    file = tmp_path / "experiment.json"
    file.write_text(json.dumps(experiment))
    back = read_experiment(file)
    assert [(f.at, f.fault, f.target) for f in back.faults] == [(f.at, f.fault, f.target) for f in scenario.faults]


def running_release(sandbox: str) -> releases.Release:
    """The release the live sandbox's api container runs, from its label."""
    container = stack.containers(stack.connect(), sandbox)["api"]
    return releases.from_label(container.labels.get(releases.LABEL)).current


@pytest.mark.docker
@pytest.mark.slow
def test_a_bad_release_survives_a_restart_and_a_rollback_ends_it(live):
    before = running_release(live)
    assert probes.slo_ok(live)
    done = actions.inject_fault("bad_deploy", "api", live)
    assert done == {"fault": "bad_deploy", "target": "api", "sandbox": live}
    bad = running_release(live)
    assert bad.broken and not before.broken
    assert wait_for(lambda: not probes.slo_ok(live), 5)  # users fail through the broken api
    actions.repair("restart", "api", live)
    assert running_release(live) == bad  # the same broken release again
    time.sleep(2)  # two ticks: long enough for a restart to have served, had it helped
    assert not probes.slo_ok(live)
    assert actions.repair("rollback", "api", live)["repair"] == "rollback"
    assert running_release(live) == before
    assert wait_for(lambda: probes.slo_ok(live) and probes.service_healthy("api", live), 10)
