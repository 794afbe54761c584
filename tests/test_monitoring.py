"""The sidecar's shipped monitoring (sandbox/monitoring/): alerting rules checked and unit-tested by
Prometheus's own promtool, a metrics page that passes its lint, a Grafana dashboard that asks only
for metrics the sidecar exports, and a real Prometheus server scraping a running sidecar."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

import pytest
import yaml

from deeplops.catalog import data_dir
from deeplops.sidecar.telemetry import Metrics, Server

MONITORING = data_dir("sandbox") / "monitoring"
RULES = MONITORING / "deeplops-sidecar.rules.yml"
DASHBOARD = MONITORING / "deeplops-sidecar.dashboard.json"


def _tool(name: str) -> str:
    """The path of Prometheus's ``name`` (Debian's prometheus package). CI installs it; elsewhere
    its tests are skipped, unless DEEPLOPS_REQUIRE_DOCKER asks every real tool to be there."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("DEEPLOPS_REQUIRE_DOCKER"):
            pytest.fail(f"{name} not found: install Debian's prometheus package (.ci/run does)")
        pytest.skip(f"{name} not installed (Debian's prometheus package)")
    return path


def _exprs() -> list[str]:
    """Every PromQL expression the dashboard's panels ask."""
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def _rule_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def _metrics_page() -> str:
    """The /metrics page of a sidecar's telemetry with every metric touched, served over HTTP."""
    metrics = Metrics()
    metrics.repairs.labels("restart", "db", "healed").inc()
    metrics.repairs.labels("rollback", "api", "not_healed").inc()
    metrics.suppressed.labels("restart", "db", "cooldown").inc()
    metrics.held.labels("unsettled").inc()
    metrics.decisions.inc(3)
    metrics.errors.inc()
    metrics.slo.set(1)
    metrics.unhealthy.set(0)
    metrics.breaker.set(0)
    metrics.detection.observe(2.5)
    metrics.recovery.observe(6.0)
    alive = threading.Event()
    alive.set()
    server = Server(metrics, 0, alive)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as r:
            return r.read().decode()
    finally:
        server.close()


def test_the_alerting_rules_pass_promtools_check_and_their_unit_tests():
    promtool = _tool("promtool")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0 and "SUCCESS: 6 rules found" in checked.stdout, checked.stdout + checked.stderr
    # Firing and not firing at given times: the breaker, failing repairs, a fast SLO burn, a sidecar gone.
    tested = subprocess.run([promtool, "test", "rules", "deeplops-sidecar.rules.test.yml"], cwd=MONITORING,
                            capture_output=True, text=True)  # fmt: skip
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    config = subprocess.run([promtool, "check", "config", "prometheus.yml"], cwd=MONITORING, capture_output=True,
                            text=True)  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr


def test_the_sidecars_metrics_page_passes_promtools_lint():
    page = _metrics_page()
    linted = subprocess.run([_tool("promtool"), "check", "metrics"], input=page, capture_output=True, text=True)
    assert linted.returncode == 0 and not linted.stdout.strip(), linted.stdout + linted.stderr


def test_the_rules_and_the_dashboard_ask_only_for_metrics_the_sidecar_exports():
    exported = set(re.findall(r"^(deeplops_sidecar_\w+)[{ ]", _metrics_page(), re.MULTILINE))
    asked = {name for expr in [*_exprs(), *_rule_exprs()] for name in re.findall(r"deeplops_sidecar_\w+", expr)}
    assert asked and asked <= exported, asked - exported
    # Between them they watch the SLO, the breaker, repairs and their outcomes, and both histograms.
    watched = {"deeplops_sidecar_slo_ok", "deeplops_sidecar_circuit_open", "deeplops_sidecar_repairs_total",
               "deeplops_sidecar_detection_seconds_bucket", "deeplops_sidecar_recovery_seconds_bucket"}  # fmt: skip
    assert watched <= asked


def test_every_dashboard_panel_reads_the_chosen_prometheus_and_sidecars():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance"}
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all('instance=~"$instance"' in t["expr"] for t in panel["targets"]), panel["title"]


# -- a real Prometheus server ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _query(port: int, expr: str) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _value(port: int, expr: str) -> float | None:
    """The first sample's value of ``expr`` now, or None (no sample, or no server yet)."""
    try:
        code, body = _query(port, expr)
    except OSError:
        return None
    result = body.get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if code == 200 and result else None


def _until(check, timeout_s: float, what: str) -> None:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.5)


@pytest.mark.docker
@pytest.mark.slow
def test_a_real_prometheus_scrapes_a_running_sidecar_sees_its_repair_and_evaluates_the_rules(live, tmp_path):
    from test_sidecar import Running

    from deeplops.chaostoolkit import actions

    prometheus = _tool("prometheus")
    side = Running(live, tmp_path, "--policy", "runbook")
    # The shipped configuration, pointed at this sidecar and scraping every second.
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(RULES)]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{side.port}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    server = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"),
    )  # fmt: skip
    try:
        _until(lambda: (_value(port, 'up{job="deeplops-sidecar"}') or 0) == 1, 60, "Prometheus to scrape the sidecar")
        _until(lambda: (_value(port, "deeplops_sidecar_decisions_total") or 0) >= 3, 30, "three decisions")
        assert _value(port, "deeplops_sidecar_slo_ok") == 1.0
        # A fault: the sidecar's restart of db shows up in Prometheus as a healed repair.
        actions.inject_fault("kill", "db", live)
        healed = 'deeplops_sidecar_repairs_total{repair="restart", service="db", outcome="healed"}'
        _until(lambda: (_value(port, healed) or 0) >= 1, 60, "the repair in Prometheus")
        _until(lambda: _value(port, "deeplops_sidecar_detection_seconds_count") is not None, 10, "the detection")
        # Every dashboard query is valid PromQL for this server and, with a few scrapes, answers.
        for expr in _exprs():
            code, body = _query(port, expr.replace("$instance", ".*").replace("$__range", "5m"))
            assert code == 200 and body["status"] == "success", (expr, body)
        # The rules loaded and evaluate without error. On a stack that healed at once, none about the
        # sidecar fires; the SLO's may (the outage is a real share of this short history).
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as r:
            [group] = json.loads(r.read())["data"]["groups"]
        assert len(group["rules"]) == 6
        _until(lambda: _rules_ok(port), 10, "every rule evaluated")
        firing = {r["name"] for r in _rules(port) if r["state"] == "firing"}
        assert firing <= {"DeeplopsSloBurningFast", "DeeplopsSloBurningSlowly"}, firing
        # The sidecar stops: Prometheus sees it down.
        assert side.stop() == 0
        _until(lambda: _value(port, 'up{job="deeplops-sidecar"}') == 0, 15, "Prometheus to see the sidecar down")
    finally:
        if side.proc.poll() is None:
            side.stop()
        server.terminate()
        server.wait(timeout=20)


def _rules(port: int) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules", timeout=5) as r:
        return [rule for g in json.loads(r.read())["data"]["groups"] for rule in g["rules"]]


def _rules_ok(port: int) -> bool:
    return all(r["health"] == "ok" for r in _rules(port))
