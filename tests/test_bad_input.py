"""Bad input, class by class: exit status 2 and one line naming the field, what was expected and
what was given, before any work, with nothing written; and output paths that are never replaced
when they are devices, pipes or links. The sidecar's and the Docker backend's own classes are
tested beside them (test_sidecar, test_host_safety)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = yaml.safe_load((ROOT / "scenarios" / "db-crash-cascade.yaml").read_text())
EXPERIMENT = json.loads((ROOT / "examples" / "chaostoolkit-db-kill.json").read_text())
SECRET = "s3cr3t-t0ken"


def one_line_error(result, *fragments: str) -> str:
    """The error line, after checking it is the only one, with exit status 2 and no traceback."""
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def scenario(**changes: object) -> dict:
    return {**SCENARIO, **changes}


# -- values of the wrong shape, out of range, or never checked: scenarios ----------------------

SCENARIO_CASES = {
    "a list as a target": (
        scenario(faults=[{"at": 4, "fault": "kill", "target": ["db"]}]),
        ("'target' must be a service name", "a list"),
    ),
    "a mapping as a fault": (scenario(faults=[{"at": 4, "fault": {"kill": 1}, "target": "db"}]), ("unknown fault",)),
    "ticks of 1e9": (scenario(ticks=10**9), ("'ticks'", "86400", "1000000000")),
    "ticks of 1e30": (scenario(ticks=1e30), ("'ticks'", "1e+30")),
    "a seed of 2**64": (scenario(seed=2**64), ("'seed'", "4294967295")),
    "a list as env": (scenario(env=["shop"]), ("'env'", "a list")),
    "availability 'high'": (scenario(expect={"availability": "high"}), ("'expect.availability'", "'high'")),
    "availability 5": (scenario(expect={"availability": 5}), ("'expect.availability'", "[0, 1]", "got 5")),
    "availability NaN": (scenario(expect={"availability": float("nan")}), ("'expect.availability'", "nan")),
    "a mapping among healthy_at_end": (
        scenario(expect={"healthy_at_end": [{"db": True}]}),
        ("'expect.healthy_at_end'", "a dict"),
    ),
    "a list as the name": (scenario(name=["x"]), ("'name'", "a list")),
}


@pytest.mark.parametrize("case", SCENARIO_CASES)
def test_a_bad_scenario_value_is_one_line_naming_the_field(cli, tmp_path, case):
    doc, says = SCENARIO_CASES[case]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    before = files(tmp_path)
    one_line_error(cli("replay", str(path), "--order", "runbook", "--json", str(tmp_path / "m.json")), str(path), *says)
    assert files(tmp_path) == before


RAW_YAML_CASES = {
    "a key given twice": (b"name: x\nticks: 30\nticks: 40\nfaults: []\n", ("'ticks' appears twice", "line 3")),
    "anchors and aliases": (b"name: x\nticks: &t 30\nseed: *t\n", ("anchors and aliases",)),
    "not UTF-8": (b"name: caf\xe9\nticks: 30\n", ("not UTF-8", "byte 9")),
    "a binary file": (b"\x7fELF\x02\x01\x01\x00\x00\x00", ("binary", "NUL")),
    "nested without end": (b"[" * 20_000 + b"]" * 20_000, ("nested too deeply",)),
}


@pytest.mark.parametrize("case", RAW_YAML_CASES)
def test_a_malformed_yaml_file_is_one_line(cli, tmp_path, case):
    data, says = RAW_YAML_CASES[case]
    path = tmp_path / "s.yaml"
    path.write_bytes(data)
    one_line_error(cli("replay", str(path), "--order", "runbook"), str(path), *says)


def test_a_folder_or_device_given_as_a_scenario_is_refused_unread(cli, tmp_path):
    folder = tmp_path / "d.yaml"
    folder.mkdir()
    one_line_error(cli("evaluate", "--order", "runbook", "--scenario", str(folder)), "not a regular file")
    one_line_error(cli("evaluate", "--order", "runbook", "--scenario", "/dev/zero"), "/dev/zero", "not a regular file")


# -- topologies -------------------------------------------------------------------------------

TOPOLOGY_CASES = {
    "disk_mb larger than any volume": (
        "name: t\nservices:\n  a: {entry: true, disk_mb: 1000000}\n",
        ("'disk_mb' (MiB)", "1024", "1000000"),
    ),
    "a mapping as depends_on": (
        "name: t\nservices:\n  a: {entry: true, depends_on: {b: 1}}\n  b: {}\n",
        ("'depends_on'", "a dict"),
    ),
    "a service given twice": ("name: t\nservices:\n  a: {entry: true}\n  a: {}\n", ("'a' appears twice",)),
    "a list as the name": ("name: [t]\nservices:\n  a: {entry: true}\n", ("'name'", "a list")),
}


@pytest.mark.parametrize("case", TOPOLOGY_CASES)
def test_a_bad_topology_is_one_line_naming_the_field(cli, tmp_path, case):
    text, says = TOPOLOGY_CASES[case]
    path = tmp_path / "t.yaml"
    path.write_text(text)
    one_line_error(cli("evaluate", "--order", "runbook", "--env", str(path)), str(path), *says)


@pytest.mark.parametrize(
    "secret",
    [
        f"root:{SECRET}:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",  # /etc/shadow's shape
        f"- {SECRET}\n- another\n",
        f'{{"token": "{SECRET}"}}\n',
    ],
)
def test_an_error_names_what_was_expected_never_what_a_foreign_file_holds(cli, tmp_path, secret):
    path = tmp_path / "foreign"
    path.write_text(secret)
    for args in (
        ("evaluate", "--order", "runbook", "--env", str(path)),
        ("replay", str(SCENARIO_WITH_ENV(tmp_path, path)), "--order", "runbook"),
    ):
        line = one_line_error(cli(*args), "expected")
        assert SECRET not in line


def SCENARIO_WITH_ENV(folder: Path, env: Path) -> Path:  # noqa: N802  # reads as the file it makes
    path = folder / "uses-foreign.yaml"
    path.write_text(yaml.safe_dump(scenario(env=str(env))))
    return path


# -- traces -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trace_lines(tmp_path_factory) -> list[str]:
    """The lines of one trace recorded by 'evaluate --record'."""
    from deeplops.actions import Role
    from deeplops.evaluate import Match, play
    from deeplops.policies import load_policy
    from deeplops.topology import load_topology

    folder = tmp_path_factory.mktemp("trace")
    traces: list = []
    match = Match(load_topology("shop"), load_policy("runbook", Role.ORDER), load_policy("random", Role.CHAOS), "sim")
    play(match, 1, seed=3, traces=traces)
    traces[0].write(folder / "t.jsonl")
    return (folder / "t.jsonl").read_text().splitlines()


def _header(lines: list[str], **changes: object) -> list[str]:
    doc = json.loads(lines[0])
    doc["header"].update(changes)
    return [json.dumps(doc), *lines[1:]]


def _first_fault_row(lines: list[str]) -> int:
    return next(i for i, line in enumerate(lines) if i and json.loads(line)["faults"])


TRACE_CASES = {
    "a number as the version": (lambda ls: _header(ls, version=5), ("'version'", "got 5")),
    "a seed of 'abc'": (lambda ls: _header(ls, seed="abc"), ("'seed'", "'abc'")),
    "a seed of 2**64": (lambda ls: _header(ls, seed=2**64), ("'seed'", "4294967295")),
    "ticks of 1e9": (lambda ls: _header(ls, ticks=10**9), ("'ticks'", "86400")),
    "a string as the services": (lambda ls: _header(ls, services="db"), ("'services'", "'db'")),
    "lists among the services": (lambda ls: _header(ls, services=[["db"]]), ("'services'", "a list")),
    "a list as a fault's target": (
        lambda ls: [
            *ls[: (i := _first_fault_row(ls))],
            json.dumps({**(row := json.loads(ls[i])), "faults": [{**row["faults"][0], "target": ["db"]}]}),
            *ls[i + 1 :],
        ],
        ("a fault must name a target", "a list"),
    ),
    "NaN in a row": (lambda ls: [*ls[:2], ls[2].replace('"slo": true', '"slo": NaN'), *ls[3:]], ("NaN",)),
    "a key given twice": (lambda ls: [ls[0][:-1] + ', "header": {}}', *ls[1:]], ("'header' appears twice",)),
}


@pytest.mark.parametrize("case", TRACE_CASES)
def test_a_bad_trace_is_one_line_naming_the_field(cli, tmp_path, trace_lines, case):
    change, says = TRACE_CASES[case]
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(change(trace_lines)) + "\n")
    one_line_error(cli("replay", str(path), "--order", "runbook"), str(path), *says)


def test_a_trace_that_is_not_utf8_is_one_line(cli, tmp_path, trace_lines):
    path = tmp_path / "t.jsonl"
    path.write_bytes(trace_lines[0].encode() + b"\n\xff\xfe\n")
    one_line_error(cli("replay", str(path), "--order", "runbook"), "not UTF-8")


def test_the_recorded_trace_itself_replays(cli, tmp_path, trace_lines):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(trace_lines) + "\n")
    assert cli("replay", str(path), "--order", "runbook").code == 0


# -- Chaos Toolkit experiments ----------------------------------------------------------------


def _deeplops_extension(doc: dict, **changes: object) -> dict:
    doc = json.loads(json.dumps(doc))
    ext = next(e for e in doc["extensions"] if e.get("name") == "deeplops")
    ext.update(changes)
    return doc


def _method(doc: dict, index: int, **changes: object) -> dict:
    doc = json.loads(json.dumps(doc))
    doc["method"][index].update(changes)
    return doc


PROVIDER = EXPERIMENT["method"][0]["provider"]
EXPERIMENT_CASES = {
    "a list as the configuration": ({**EXPERIMENT, "configuration": ["x"]}, ("'configuration'", "a list")),
    "a mapping as the extensions": ({**EXPERIMENT, "extensions": {"name": "deeplops"}}, ("'extensions'", "a dict")),
    "availability 'high'": (
        _deeplops_extension(EXPERIMENT, expect={"availability": "high"}),
        ("'expect.availability'", "'high'"),
    ),
    "availability 5": (_deeplops_extension(EXPERIMENT, expect={"availability": 5}), ("'expect.availability'", "5")),
    "ticks of 1e9": (_deeplops_extension(EXPERIMENT, ticks=10**9), ("'ticks'", "86400")),
    "a seed of 2**64": (_deeplops_extension(EXPERIMENT, seed=2**64), ("'seed'", "4294967295")),
    "a pause of 1e30 s": (_method(EXPERIMENT, 0, pauses={"before": 1e30}), ("pauses.before", "86400")),
    "a list as the target": (
        _method(
            EXPERIMENT,
            0,
            provider={**PROVIDER, "arguments": {**PROVIDER["arguments"], "target": ["db"]}},
        ),
        ("unknown service", "a list"),
    ),
    "a number as the title": ({**EXPERIMENT, "title": 5}, ("'title'",)),
}


@pytest.mark.parametrize("case", EXPERIMENT_CASES)
def test_a_bad_experiment_is_one_line_naming_the_field(cli, tmp_path, case):
    doc, says = EXPERIMENT_CASES[case]
    path = tmp_path / "e.json"
    path.write_text(json.dumps(doc))
    one_line_error(cli("replay", str(path), "--order", "runbook"), str(path), *says)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_an_experiment_pause_of_nan_or_infinity_is_refused(cli, tmp_path, constant):
    path = tmp_path / "e.json"
    text = json.dumps(_method(EXPERIMENT, 0, pauses={"before": 12345.5}))
    path.write_text(text.replace("12345.5", constant))
    one_line_error(cli("replay", str(path), "--order", "runbook"), f"{constant} is not a JSON number")


def test_an_experiment_that_is_not_utf8_is_one_line(cli, tmp_path):
    path = tmp_path / "e.json"
    path.write_bytes(b'{"title": "caf\xe9"}')
    one_line_error(cli("replay", str(path), "--order", "runbook"), "not UTF-8")


# -- numbers out of any sane range on the command line ----------------------------------------

OPTION_CASES = {
    "a seed of 2**64": (("evaluate", "--order", "runbook", "--seed", str(2**64)), ("--seed", "4294967295")),
    "seed + episode overflowing": (
        ("evaluate", "--order", "runbook", "--seed", str(2**32 - 1), "--episodes", "2"),
        ("--seed", "seed + episodes - 1"),
    ),
    "1e9 episodes": (("evaluate", "--order", "runbook", "--episodes", str(10**9)), ("--episodes", "100000")),
    "a million generations": (("selfplay", "--generations", "1000000"), ("--generations", "1000")),
    "ticks of 1e9": (("selfplay", "--ticks", str(10**9)), ("--ticks", "86400")),
    "a selfplay seed of 2**64": (("selfplay", "--seed", str(2**64)), ("--seed",)),
    "chaos beside scenarios, silently ignored before": (
        (
            "evaluate",
            "--order",
            "runbook",
            "--scenario",
            str(ROOT / "scenarios" / "db-crash-cascade.yaml"),
            "--chaos",
            "noop",
        ),
        ("--chaos does not apply with --scenario",),
    ),
    "bench for inf seconds": (("bench", "--seconds", "inf"), ("--seconds", "inf")),
    "bench for nan seconds": (("bench", "--seconds", "nan"), ("--seconds", "nan")),
    "bench train for no time": (("bench", "train", "--seconds", "0"), ("--seconds", "0")),
    "bench train for inf seconds": (("bench", "train", "--seconds", "inf"), ("--seconds", "inf")),
}


@pytest.mark.parametrize("case", OPTION_CASES)
def test_a_number_out_of_range_is_one_line_before_any_work(cli, tmp_path, monkeypatch, case):
    args, says = OPTION_CASES[case]
    monkeypatch.chdir(tmp_path)  # selfplay's default --out is relative: it must not be made
    one_line_error(cli(*args), *says)
    assert files(tmp_path) == set()


# -- output paths: checked before the work, and nothing left behind ---------------------------


def test_record_into_an_existing_file_is_refused_before_playing(cli, tmp_path):
    target = tmp_path / "traces"
    target.write_text("mine")
    one_line_error(cli("evaluate", "--order", "runbook", "--record", str(target)), "--record", "is a file")
    assert target.read_text() == "mine"


def test_a_plot_that_is_not_a_picture_is_refused_before_replaying(cli, tmp_path):
    scenario_file = ROOT / "scenarios" / "db-crash-cascade.yaml"
    one_line_error(
        cli("replay", str(scenario_file), "--order", "runbook", "--plot", str(tmp_path / "x.txt")), "--plot", ".png"
    )
    assert files(tmp_path) == set()


def test_json_into_a_folder_is_refused_before_playing(cli, tmp_path):
    one_line_error(cli("evaluate", "--order", "runbook", "--json", str(tmp_path)), "--json", "is a folder")
    assert files(tmp_path) == set()


@pytest.mark.parametrize(
    "command",
    [("bench", "sidecar", "--json"), ("bench", "soak", "--json"), ("bench", "train", "--json"),
     ("sandbox", "compare", "--json"),
     ("sandbox", "calibrate", "--out")],
)  # fmt: skip
def test_a_trial_on_containers_refuses_its_output_path_before_any_container(cli, tmp_path, command):
    one_line_error(cli(*command, str(tmp_path)), command[-1], "is a folder")
    assert files(tmp_path) == set()


def test_json_under_a_file_is_refused_before_playing(cli, tmp_path):
    (tmp_path / "f").write_text("x")
    one_line_error(cli("evaluate", "--order", "runbook", "--json", str(tmp_path / "f" / "m.json")), "is a file")


def test_selfplay_into_a_file_is_refused_before_training(cli, tmp_path):
    target = tmp_path / "run"
    target.write_text("mine")
    one_line_error(cli("selfplay", "--out", str(target)), "--out", "is a file")
    assert target.read_text() == "mine"


@pytest.mark.parametrize(
    ("state", "says"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected the state of a selfplay run"),
        ('{"completed": "two", "config": {}}', "other settings"),
    ],
)
def test_selfplay_into_a_folder_with_a_corrupt_state_is_refused_before_training(cli, tmp_path, state, says):
    (tmp_path / "state.json").write_text(state)
    one_line_error(cli("selfplay", "--out", str(tmp_path)), "state.json" if "settings" not in says else "", says)
    assert files(tmp_path) == {tmp_path / "state.json"}


def test_scenario_export_into_a_folder_leaves_nothing(cli, tmp_path):
    scenario_file = ROOT / "scenarios" / "db-crash-cascade.yaml"
    one_line_error(cli("scenario", "export", str(scenario_file), "--out", str(tmp_path)), "--out", "is a folder")
    assert files(tmp_path) == set()


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from deeplops import outputs
    from deeplops.errors import ConfigError

    def refuse(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ConfigError, match="No space left on device"):
        outputs.write_text(tmp_path / "m.json", "{}", "--json")
    assert files(tmp_path) == set()


# -- special files are written to, never replaced ---------------------------------------------


def test_json_into_dev_null_leaves_the_device(cli):
    assert cli("evaluate", "--order", "runbook", "--episodes", "1", "--json", "/dev/null").code == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_json_through_a_symlink_to_a_device_keeps_the_link(cli, tmp_path):
    link = tmp_path / "null"
    link.symlink_to("/dev/null")
    assert cli("evaluate", "--order", "runbook", "--episodes", "1", "--json", str(link)).code == 0
    assert link.is_symlink() and os.readlink(link) == "/dev/null"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_json_into_a_fifo_is_read_by_its_reader(cli, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    result = cli("evaluate", "--order", "runbook", "--episodes", "1", "--json", str(fifo))
    reader.join(timeout=60)
    assert result.code == 0
    assert json.loads(got[0])["episodes"] == 1
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_json_through_a_symlink_to_a_file_updates_the_file_and_keeps_the_link(cli, tmp_path):
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("{}")
    link.symlink_to(target)
    assert cli("evaluate", "--order", "runbook", "--episodes", "1", "--json", str(link)).code == 0
    assert link.is_symlink()
    assert json.loads(target.read_text())["episodes"] == 1


# -- names shown as given, never as markup ----------------------------------------------------


def test_a_name_with_markup_is_shown_as_written(cli, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario(name="[/db] [bold]x")))
    result = cli("replay", str(path), "--order", "runbook", "--plot", str(tmp_path / "p.png"))
    assert result.code == 0, result.err
    assert "[/db] [bold]x" in result.out


def test_a_name_with_dollars_plots(cli, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario(name="costs $5 and $x^{")))
    result = cli("replay", str(path), "--order", "runbook", "--plot", str(tmp_path / "p.png"))
    assert result.code == 0, result.err
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


# -- Ctrl-C -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_ctrl_c_says_it_was_interrupted_and_what_was_kept(tmp_path):
    json_path = tmp_path / "m.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deeplops", "evaluate", "--order", "runbook", "--episodes", "100000",
         "--json", str(json_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C as in a terminal, even where the test run was started in the background
        # (which leaves SIGINT ignored, and an ignored signal stays ignored across exec).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    # Wait until it is playing (its progress is silent off a terminal: poll its state instead).
    deadline = 120
    while deadline and proc.poll() is None:
        if _busy(proc.pid):
            break
        deadline -= 1
        threading.Event().wait(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "deeplops: interrupted: nothing was written"
    assert not json_path.exists()


def _busy(pid: int) -> bool:
    """Whether the process has used more than a few seconds of CPU (imports done, playing)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") > 6.0
