"""``deeplops benchmark``: the fixed protocol, its leaderboard's flags, and the command's outputs."""

from __future__ import annotations

import io
import json
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, fields
from pathlib import Path

import pytest
import yaml
from test_cli import assert_one_line_error

from deeplops import benchmark as bm
from deeplops.cli import main
from deeplops.metrics import Summary
from deeplops.policies import load_policy
from deeplops.scenario import shipped_scenarios
from deeplops.sim import SimParams

SUITE_IDS = [
    "random-topologies", "bank", "real-software", "scenarios", "slow-restarts", "very-slow-restarts",
    "noisy-probes", "lagging-probes", "noisy-lagging", "busy-deploys", "trained-chaos",
]  # fmt: skip
CONTRACT_FIELDS = {
    "availability", "mttr_mean", "mttr_p95", "faults_injected", "faults_recovered",
    "unrecovered", "relapses", "repairs", "wasted_repairs", "episodes",
}  # fmt: skip
"""What every ``--json`` object of metrics carries (docs/design.md §9)."""
FAST = ("--order", "noop", "--order", "runbook", "--episodes", "2")
"""A small benchmark for the command-line tests: two cheap policies, two episodes per suite."""


@pytest.fixture(scope="module")
def board() -> bm.Leaderboard:
    """Three baselines on the whole protocol, three episodes per suite."""
    policies = {name: load_policy(name, "order") for name in ("noop", "runbook", "oracle")}
    return bm.run(policies, bm.protocol(3), 3)


def summary(availability: float, faults: int = 10, repairs: int = 10) -> Summary:
    """A hand-made summary: only availability, faults and repairs matter to the flags."""
    return Summary(availability=availability, mttr_mean=2.0, mttr_p95=3.0, faults_injected=faults,
                   faults_recovered=faults, unrecovered=0, relapses=0, repairs=repairs, wasted_repairs=0, data_loss=0,
                   invalid_actions=0, episodes=4, ticks=800)  # fmt: skip


def made(rows: dict[str, tuple[Summary, Summary]]) -> bm.Leaderboard:
    """A leaderboard of hand-made figures on the suites bank and scenarios."""
    suites = (bm.Suite("bank", ()), bm.Suite("scenarios", ()))
    scores = {p: {"bank": bm.Score(a), "scenarios": bm.Score(b)} for p, (a, b) in rows.items()}
    return bm.Leaderboard(suites, scores, episodes=4)


# -- the protocol ------------------------------------------------------------------------------


def test_the_suites_are_the_documented_ones_in_order():
    assert [s.id for s in bm.protocol(2)] == SUITE_IDS
    assert list(bm.SUITES) == SUITE_IDS


def test_the_real_software_suite_plays_store_and_payments_whose_services_run_real_kinds():
    suite = {s.id: s for s in bm.protocol(2)}["real-software"]
    assert [stage.topology.name for stage in suite.stages] == ["store", "payments"]
    kinds = {k for stage in suite.stages for k in stage.topology.kinds}
    assert {"postgres", "redis", "nginx", "app", "worker"} <= kinds


def test_random_topologies_are_ones_training_never_draws():
    suite = bm.protocol(2)[0]
    names = [stage.topology.name for stage in suite.stages]
    assert names == [f"random-{seed}" for seed in range(10_000, 10_008)]


def test_episodes_are_split_over_a_suites_systems_with_at_least_one_each():
    played = {s.id: [stage.episodes for stage in s.stages] for s in bm.protocol(5)}
    assert played["random-topologies"] == [1] * 8
    assert played["bank"] == [5]
    assert played["real-software"] == [3, 3]
    assert played["scenarios"] == [1] * len(shipped_scenarios())  # more drills than episodes: one each
    assert played["slow-restarts"] == [3, 3]
    assert played["trained-chaos"] == [5]


def test_no_two_episodes_of_a_suite_share_a_seed_and_none_is_a_training_seed():
    for suite in bm.protocol(6):
        seeds = [stage.seed + k for stage in suite.stages for k in range(stage.episodes)]
        assert len(set(seeds)) == len(seeds), suite.id
        assert min(seeds) >= 1_000_000, suite.id


def test_dynamics_suites_change_their_fields_on_top_of_the_sim_base():
    base = SimParams(probe_timeout_s=0.7, restart_ticks=5)
    suites = {s.id: s for s in bm.protocol(2, base)}
    slow = suites["very-slow-restarts"].stages[0].params
    assert (slow.restart_ticks, slow.recreate_ticks, slow.probe_timeout_s) == (8, 8, 0.7)
    noisy = suites["noisy-lagging"].stages[1].params
    assert (noisy.probe_noise, noisy.probe_delay, noisy.restart_ticks, noisy.probe_timeout_s) == (0.1, 3, 5, 0.7)
    assert suites["bank"].stages[0].params == base
    assert [stage.topology.name for stage in suites["lagging-probes"].stages] == ["shop", "bank"]


def test_trained_chaos_plays_the_shipped_chaos_agent_on_shop():
    stage = bm.protocol(2)[-1].stages[0]
    assert stage.topology.name == "shop"
    assert stage.chaos.name == load_policy("pretrained", "chaos").name


# -- what the baselines must show --------------------------------------------------------------


def test_every_policy_has_a_score_on_every_suite(board):
    assert board.policies == ("noop", "runbook", "oracle")
    for policy in board.policies:
        assert list(board.scores[policy]) == SUITE_IDS


def test_the_runbook_beats_doing_nothing_on_every_suite(board):
    for suite in SUITE_IDS:
        assert board.scores["runbook"][suite].summary.availability > board.scores["noop"][suite].summary.availability


@pytest.mark.parametrize("suite", ["random-topologies", "bank", "scenarios", "noisy-probes", "trained-chaos"])
def test_the_oracle_is_at_least_the_runbook_where_it_sees_what_the_runbook_guesses(board, suite):
    assert board.scores["oracle"][suite].summary.availability >= board.scores["runbook"][suite].summary.availability


def test_doing_nothing_repairs_nothing_and_storms_nowhere(board):
    for suite in SUITE_IDS:
        assert board.scores["noop"][suite].summary.repairs == 0
    assert board.storms("noop") == ()


# -- the leaderboard's flags and ranking -------------------------------------------------------


def test_more_than_two_repairs_per_fault_is_a_storm_and_two_is_not():
    lb = made({"a": (summary(0.9, faults=10, repairs=21), summary(0.9, faults=10, repairs=20))})
    assert lb.storms("a") == ("bank",)
    assert lb.scores["a"]["bank"].repairs_per_fault == pytest.approx(2.1)


def test_repairs_with_no_fault_injected_are_a_storm():
    lb = made({"a": (summary(0.9, faults=0, repairs=1), summary(0.9, faults=0, repairs=0))})
    assert lb.storms("a") == ("bank",)
    assert lb.scores["a"]["scenarios"].repairs_per_fault is None


def test_a_policy_above_the_oracle_beyond_noise_is_flagged_and_within_noise_is_not():
    lb = made({"oracle": (summary(0.90), summary(0.90)), "x": (summary(0.92), summary(0.905))})
    assert lb.above_oracle() == (bm.AboveOracle("x", "bank", 0.92, 0.90),)


def test_without_the_oracle_nothing_is_flagged():
    lb = made({"x": (summary(0.92), summary(0.905))})
    assert lb.above_oracle() == ()


def test_the_ranking_is_by_mean_availability_over_the_suites():
    lb = made({"a": (summary(0.5), summary(0.9)), "b": (summary(0.8), summary(0.7)), "c": (summary(0.1), summary(0.2))})
    assert lb.mean_availability("a") == pytest.approx(0.7)
    assert lb.mean_availability("b") == pytest.approx(0.75)
    assert lb.ranking() == ("b", "a", "c")


def test_the_markdown_marks_storms_and_oracle_beaters_in_their_cells():
    lb = made({"oracle": (summary(0.90), summary(0.90)), "x": (summary(0.95, repairs=30), summary(0.80))})
    rows = {line.split("|")[2].strip(): line.split("|") for line in lb.markdown().splitlines()[2:4]}
    assert rows["x"][3].strip() == "0.950 ⚠ †"
    assert rows["x"][4].strip() == "0.800"
    assert rows["x"][5].strip() == "0.875"
    assert rows["oracle"][3].strip() == "0.900"


# -- the command -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One ``deeplops benchmark`` invocation: exit code, output, and the ``--json`` object it wrote."""

    code: int
    out: str
    err: str
    doc: dict


def benchmark_cli(json_path: Path, *args: str) -> Run:
    """Run ``deeplops benchmark ARGS --json FILE`` through its entry point (for module-scoped fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with pytest.MonkeyPatch.context() as mp, redirect_stdout(out), redirect_stderr(err):
        mp.setattr(sys, "argv", ["deeplops", "benchmark", *args, "--json", str(json_path)])
        try:
            main()
        except SystemExit as exc:
            code = int(exc.code or 0)
    return Run(code, out.getvalue(), err.getvalue(), json.loads(json_path.read_text()) if code == 0 else {})


@pytest.fixture(scope="module")
def markdown_run(tmp_path_factory) -> Run:
    """The small benchmark, printed as Markdown."""
    return benchmark_cli(tmp_path_factory.mktemp("md") / "b.json", *FAST, "--markdown")


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Run:
    """The same small benchmark, printed as text tables."""
    return benchmark_cli(tmp_path_factory.mktemp("text") / "b.json", *FAST)


def test_json_holds_every_metric_of_every_policy_on_every_suite(markdown_run):
    assert markdown_run.code == 0, markdown_run.err
    doc = markdown_run.doc
    assert set(doc) == {"protocol", "suites", "ranking", "policies", "above_oracle"}
    assert doc["protocol"]["episodes"] == 2
    assert doc["protocol"]["episode_seed"] == 1_000_000
    assert list(doc["suites"]) == SUITE_IDS
    assert doc["suites"]["slow-restarts"]["dynamics"] == {"restart_ticks": 3, "recreate_ticks": 3}
    assert sorted(doc["ranking"]) == ["noop", "runbook"]
    assert list(doc["policies"]) == ["noop", "runbook"]
    summary_fields = {f.name for f in fields(Summary)}
    for figures in doc["policies"].values():
        assert 0.0 <= figures["mean_availability"] <= 1.0
        assert list(figures["suites"]) == SUITE_IDS
        for suite in figures["suites"].values():
            assert set(suite) == CONTRACT_FIELDS | summary_fields | {"repairs_per_fault", "storm", "above_oracle"}
    assert doc["policies"]["runbook"]["suites"]["bank"]["episodes"] == 2


def test_the_same_arguments_give_the_same_json_whatever_is_printed(markdown_run, text_run):
    assert text_run.code == 0, text_run.err
    assert markdown_run.doc == text_run.doc


def _markdown_tables(text: str) -> list[list[str]]:
    """Each Markdown table in ``text``: its rows, in order."""
    tables: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("|"):
            tables[-1].append(line)
        elif tables[-1]:
            tables.append([])
    return [t for t in tables if t]


def test_markdown_is_a_table_with_a_row_per_policy_and_a_column_per_suite(markdown_run):
    rows = _markdown_tables(markdown_run.out)[0]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert header == ["#", "policy", *SUITE_IDS, "mean"]
    assert set(rows[1]) <= set("|-: ")
    assert sorted(row.split("|")[2].strip() for row in rows[2:]) == ["noop", "runbook"]
    assert all(len(row.strip("|").split("|")) == len(header) for row in rows)
    assert "wrote" not in markdown_run.out  # the table can be pasted as it is


def test_markdown_gives_each_policys_repairs_per_fault_and_relapses_over_every_suite(markdown_run):
    rows = _markdown_tables(markdown_run.out)[1]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert header[:3] == ["policy", "repairs per fault", "relapses"]
    cells = {row.split("|")[1].strip(): [c.strip() for c in row.strip("|").split("|")] for row in rows[2:]}
    assert set(cells) == {"noop", "runbook"}
    assert cells["noop"][1:3] == ["0.00", "0"]  # no repair: nothing relieved, nothing relapsed
    runbook = markdown_run.doc["policies"]["runbook"]["suites"].values()
    assert cells["runbook"][2] == str(sum(suite["relapses"] for suite in runbook))
    assert float(cells["runbook"][1]) > 0


def test_the_text_table_names_every_suite_and_policy(text_run):
    for name in [*SUITE_IDS, "noop", "runbook"]:
        assert name in text_run.out


def test_help_names_every_suite(cli):
    result = cli("benchmark", "--help")
    assert result.code == 0
    text = " ".join(result.out.split())
    for suite in SUITE_IDS:
        assert suite in text


def _bad_sim(tmp_path):
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump({"restart_tics": 3}))
    return str(path)


BAD = {
    "an unknown policy": (lambda tmp: ["--order", "nosuch"], ("'nosuch'", "expected one of", "runbook")),
    "no episodes": (lambda tmp: ["--episodes", "0"], ("--episodes", "[1, 10000]", "got 0")),
    "too many episodes": (lambda tmp: ["--episodes", "10001"], ("--episodes", "[1, 10000]", "10001")),
    "an unknown sim field": (lambda tmp: ["--sim", _bad_sim(tmp)], ("--sim", "'restart_tics'", "restart_ticks")),
    "a missing sim file": (lambda tmp: ["--sim", str(tmp / "none.yaml")], ("none.yaml",)),
    "a folder as --json": (lambda tmp: ["--json", str(tmp)], ("--json", "is a folder")),
    "a file as --json's folder": (lambda tmp: ["--json", str(tmp / "sim.yaml" / "b.json")], ("--json", "is a file")),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_before_any_work_with_nothing_written(cli, tmp_path, case):
    args, says = BAD[case]
    (tmp_path / "sim.yaml").write_text("restart_ticks: 3\n")
    given = args(tmp_path)
    before = set(tmp_path.rglob("*"))
    result = cli("benchmark", "--order", "noop", *given)
    assert_one_line_error(result, *says)
    assert result.out == ""
    assert set(tmp_path.rglob("*")) == before
