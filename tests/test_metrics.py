"""Summaries are typed records inside the library and the contract's JSON object at the file edge."""

from __future__ import annotations

import json

from deeplops.actions import Role
from deeplops.drill import run_drill
from deeplops.metrics import EpisodeStats, summarize
from deeplops.policies import load_policy
from deeplops.scenario import load_scenario, shipped_scenarios

JSON_KEYS = [
    "availability",
    "mttr_mean",
    "mttr_p95",
    "faults_injected",
    "faults_recovered",
    "unrecovered",
    "relapses",
    "repairs",
    "wasted_repairs",
    "data_loss",
    "invalid_actions",
    "episodes",
    "ticks",
]


def episode(ticks: int, slo_ticks: int, mttrs: tuple[int, ...]) -> EpisodeStats:
    return EpisodeStats(
        ticks=ticks,
        slo_ticks=slo_ticks,
        faults_injected=len(mttrs),
        faults_recovered=len(mttrs),
        unrecovered=0,
        relapses=1,
        mttrs=mttrs,
        repairs=2,
        wasted_repairs=1,
        data_loss=0,
        invalid_actions=0,
    )


def test_a_summary_json_holds_every_metric_in_the_contract_order():
    summary = summarize([episode(100, 90, (2, 4)), episode(50, 50, ())])
    assert list(summary.to_json()) == JSON_KEYS
    assert summary.to_json() == {name: getattr(summary, name) for name in JSON_KEYS}


def test_a_summary_json_keeps_the_values_types():
    data = summarize([episode(10, 10, ())]).to_json()
    assert json.dumps(data) == (
        '{"availability": 1.0, "mttr_mean": null, "mttr_p95": null, "faults_injected": 0, "faults_recovered": 0, '
        '"unrecovered": 0, "relapses": 1, "repairs": 2, "wasted_repairs": 1, "data_loss": 0, "invalid_actions": 0, '
        '"episodes": 1, "ticks": 10}'
    )


def test_no_episodes_summarize_as_always_available():
    summary = summarize([])
    assert (summary.availability, summary.mttr_mean, summary.episodes, summary.ticks) == (1.0, None, 0, 0)


def test_a_drill_run_json_is_its_metrics_then_its_schedule_and_verdict():
    scenario = load_scenario(shipped_scenarios()[0])
    run = run_drill(scenario, "runbook", load_policy("runbook", Role.ORDER))
    data = run.to_json()
    assert list(data) == [*JSON_KEYS, "scheduled", "expect", "passed"]
    assert data["scheduled"] == len(scenario.faults) == run.scheduled
    assert data["expect"] == [{"clause": text, "met": met} for text, met in run.checks]
    assert data["passed"] is run.passed
    assert run.skipped_faults == run.scheduled - run.metrics.faults_injected
