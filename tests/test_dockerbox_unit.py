"""The Docker backend's pure pieces, against a fake client: no engine, no root.

Rate counters, the labels a stack is read from, iptables rule parsing, and the translation of
the client's errors at the backend's edge. The same pieces against a real engine are in the
tests marked ``docker``.
"""

from __future__ import annotations

import datetime
import os
import pickle
import sys
import time
from types import SimpleNamespace

import docker
import numpy as np
import pytest
import requests.exceptions
import urllib3.exceptions
from docker.errors import APIError, BuildError, DockerException
from fake_docker import FakeClient, FakeContainer, FakeNetwork, FakeResponse, not_found

from deeplops.dockerbox import host, image, stack
from deeplops.dockerbox.engine import edge, engine_errors, translate
from deeplops.dockerbox.owner import owner_id
from deeplops.dockerbox.sandbox import counter_rate
from deeplops.errors import DeeplopsError, EngineError, SandboxError
from deeplops.faults import Repair
from deeplops.observation import RESTARTS_SCALE, Feature
from deeplops.sidecar import daemon
from deeplops.sidecar.live import ComposeStack, SandboxStack, StackChangedError, _strangers, project_containers
from deeplops.system import RESTART_DECAY
from deeplops.topology import load_topology

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"


def compose(service: str, project: str = "web", **labels: str) -> FakeContainer:
    """A container as Docker Compose labels it, plus ``labels``."""
    return FakeContainer(f"{project}-{service}-1", {PROJECT: project, SERVICE: service, **labels})


def sandboxed(sandbox: str, service: str | None, **labels: str) -> FakeContainer:
    """A container as a deeplops sandbox labels it (no service label when ``service`` is None)."""
    own = {stack.LABEL_SANDBOX: sandbox} | ({stack.LABEL_SERVICE: service} if service else {})
    return FakeContainer(f"{sandbox}-{service}", own | labels)


# -- rate counters ------------------------------------------------------------------------


@pytest.fixture
def cgroup_files(tmp_path, monkeypatch):
    """A v1 and a v2 cgroup folder under tmp_path, in the order the host's are looked for."""
    v1, v2 = tmp_path / "v1" / "{id}", tmp_path / "v2" / "{id}"
    monkeypatch.setattr(host, "CPU_CAP_FILES", ((str(v1 / "cpu.cfs_quota_us"), "-1"), (str(v2 / "cpu.max"), "max")))
    return tmp_path


def test_lifting_a_v1_cpu_cap_leaves_no_quota_and_putting_it_back_restores_it(cgroup_files):
    quota = cgroup_files / "v1" / "abc" / "cpu.cfs_quota_us"
    quota.parent.mkdir(parents=True)
    quota.write_text("25000\n")
    lifted = host.lift_cpu_cap("abc")
    assert lifted == (quota, "25000") and quota.read_text() == "-1"
    host.set_cpu_cap(*lifted)
    assert quota.read_text() == "25000"


def test_lifting_a_v2_cpu_cap_writes_max_and_keeps_the_cap_to_put_back(cgroup_files):
    cpu_max = cgroup_files / "v2" / "abc" / "cpu.max"
    cpu_max.parent.mkdir(parents=True)
    cpu_max.write_text("25000 100000\n")
    assert host.lift_cpu_cap("abc") == (cpu_max, "25000 100000") and cpu_max.read_text() == "max"


def test_a_cap_whose_cgroup_is_not_visible_is_left_alone(cgroup_files):
    assert host.lift_cpu_cap("abc") is None


def test_putting_back_the_cap_of_a_container_gone_since_is_a_no_op(cgroup_files):
    host.set_cpu_cap(cgroup_files / "v1" / "gone" / "cpu.cfs_quota_us", "25000")
    assert not (cgroup_files / "v1" / "gone").exists()


def test_a_counter_reads_zero_on_its_first_reading():
    last: dict[str, tuple[float, int]] = {}
    assert counter_rate(last, "api", 10.0, 5_000, 1.0) == 0.0
    assert last == {"api": (10.0, 5_000)}


def test_a_counter_rate_is_its_growth_per_second_in_units():
    last = {"api": (10.0, 1_000)}
    assert counter_rate(last, "api", 12.0, 1_000 + 500_000, 1e6) == pytest.approx(0.25)


def test_a_counter_rate_is_clamped_to_one():
    last = {"api": (10.0, 0)}
    assert counter_rate(last, "api", 11.0, 5_000_000, 1e6) == 1.0


def test_a_counter_that_went_down_reads_zero():
    last = {"api": (10.0, 9_000)}  # a new container's counter starts again from 0
    assert counter_rate(last, "api", 11.0, 100, 1.0) == 0.0


def test_a_counter_read_again_at_the_same_instant_reads_zero():
    last = {"api": (10.0, 0)}
    assert counter_rate(last, "api", 10.0, 1_000, 1.0) == 0.0


def test_a_counter_that_is_gone_reads_zero_and_starts_afresh():
    last = {"api": (10.0, 0)}
    assert counter_rate(last, "api", 11.0, None, 1.0) == 0.0
    assert "api" not in last
    assert counter_rate(last, "api", 12.0, 1_000, 1.0) == 0.0  # a first reading again


# -- labels: Compose projects --------------------------------------------------------------


def test_compose_dependencies_are_read_from_composes_own_label():
    containers = [
        compose("web", **{"com.docker.compose.depends_on": "db:service_healthy:false,cache:service_started:false"}),
        compose("db"),
        compose("cache"),
    ]
    topology = ComposeStack(FakeClient(containers), "web", containers).topology
    assert topology.services[topology.index["web"]].depends_on == ("db", "cache")


def test_the_deeplops_dependency_label_wins_over_composes():
    containers = [
        compose("web", **{"deeplops.depends_on": "db", "com.docker.compose.depends_on": "cache:service_started:false"}),
        compose("db"),
        compose("cache"),
    ]
    topology = ComposeStack(FakeClient(containers), "web", containers).topology
    assert topology.services[topology.index["web"]].depends_on == ("db",)


def test_a_dependency_outside_the_project_is_left_out():
    containers = [compose("web", **{"deeplops.depends_on": "db,elsewhere"}), compose("db")]
    topology = ComposeStack(FakeClient(containers), "web", containers).topology
    assert topology.services[topology.index["web"]].depends_on == ("db",)


def test_entries_are_the_services_nothing_depends_on_unless_marked():
    containers = [compose("web", **{"deeplops.depends_on": "db"}), compose("admin"), compose("db")]
    topology = ComposeStack(FakeClient(containers), "web", containers).topology
    assert {s.name for s in topology.services if s.entry} == {"web", "admin"}


def test_deeplops_entry_marks_the_only_entries():
    containers = [compose("web", **{"deeplops.depends_on": "db", "deeplops.entry": "True"}), compose("admin"),
                  compose("db")]  # fmt: skip
    topology = ComposeStack(FakeClient(containers), "web", containers).topology
    assert [s.name for s in topology.services if s.entry] == ["web"]


def test_a_container_labelled_deeplops_ignore_is_not_part_of_the_project():
    containers = [compose("web"), compose("sidecar", **{"deeplops.ignore": "TRUE"}), compose("db")]
    kind, found = project_containers(FakeClient(containers), "web")
    assert kind == "compose"
    assert sorted(c.labels[SERVICE] for c in found) == ["db", "web"]


def test_a_sandbox_label_is_found_before_a_compose_one_and_nothing_else_is_taken():
    containers = [sandboxed("web", "api"), compose("db"), compose("db", project="other")]
    kind, found = project_containers(FakeClient(containers), "web")
    assert (kind, [c.name for c in found]) == ("sandbox", ["web-api"])
    assert project_containers(FakeClient(containers), "nothing") == ("", [])


def test_containers_wearing_a_sandboxs_label_but_none_of_its_services_are_named_as_strangers():
    shop = load_topology("shop")
    found = [sandboxed("demo", "api"), sandboxed("demo", None), sandboxed("demo", "mystery")]
    strangers = _strangers(shop, found)
    assert len(strangers) == 2
    assert "no deeplops.service label" in strangers[0] and "mystery is not in the sandbox's topology" in strangers[1]


def test_a_sandboxs_containers_are_those_with_a_service_label():
    client = FakeClient([sandboxed("demo", "api"), sandboxed("demo", None), sandboxed("other", "api")])
    assert list(stack.containers(client, "demo")) == ["api"]


# -- labels: the owner, and the topology of a live sandbox ------------------------------------


def gone_owner() -> str:
    """An owner record of this PID with another start time: some earlier process, long gone."""
    pid, start, boot, ns = owner_id(os.getpid()).split(":")
    return f"{pid}:{int(start) + 1}:{boot}:{ns}"


def test_a_sandbox_whose_recorded_owner_is_gone_is_stale():
    client = FakeClient([
        sandboxed("gone", "api", **{stack.LABEL_OWNER: gone_owner()}),
        sandboxed("mine", "api", **{stack.LABEL_OWNER: owner_id(os.getpid())}),
        sandboxed("kept", "api"),
    ])  # fmt: skip
    found = {f.sandbox: f for f in stack.survey(client)}
    assert found["gone"].stale and found["gone"].owner == os.getpid()
    assert not found["mine"].stale and found["mine"].owner == os.getpid()
    assert not found["kept"].stale and found["kept"].owner is None  # made by 'sandbox up': lives until down


def test_a_sandbox_owned_by_a_process_in_another_pid_namespace_is_never_stale():
    _, start, boot, _ = owner_id(os.getpid()).split(":")
    client = FakeClient([sandboxed("far", "api", **{stack.LABEL_OWNER: f"999999:{start}:{boot}:1"})])
    assert not stack.survey(client)[0].stale


def test_a_network_alone_is_a_sandbox_and_its_owner_label_counts():
    network = FakeNetwork("half", {stack.LABEL_SANDBOX: "half", stack.LABEL_OWNER: gone_owner()})
    found = stack.survey(FakeClient(networks=[network]))
    assert [(f.sandbox, f.containers, f.stale) for f in found] == [("half", 0, True)]


def test_labels_that_are_not_valid_sandbox_names_are_left_alone():
    client = FakeClient([sandboxed("../etc", "api"), sandboxed("ok", "api"), sandboxed("UPPER", "api")])
    assert stack.sandboxes(client) == {"ok"}
    assert [f.sandbox for f in stack.survey(client)] == ["ok"]


def test_a_live_sandboxs_topology_is_read_from_its_networks_label():
    import json

    from deeplops.topology import topology_to_dict

    shop = load_topology("shop")
    labels = {stack.LABEL_SANDBOX: "demo", stack.LABEL_TOPOLOGY: json.dumps(topology_to_dict(shop))}
    client = FakeClient(networks=[FakeNetwork("demo", labels)])
    assert stack.topology_of(client, "demo").names == shop.names
    with pytest.raises(SandboxError, match=r"no live sandbox 'other'.*\(running: demo\)"):
        stack.topology_of(client, "other")


# -- a Compose stack measured and restarted through its handle --------------------------------


@pytest.fixture(autouse=True)
def _deploy_books_in_tmp(tmp_path, monkeypatch):
    """A Compose stack's deploy book goes beside the sidecar locks: here, a test's own folder."""
    monkeypatch.setattr(host, "STATE_DIR", tmp_path / "state")


def two_services() -> tuple[FakeClient, list[FakeContainer]]:
    containers = [compose("web", **{"deeplops.depends_on": "db"}), compose("db")]
    return FakeClient(containers), containers


def test_a_compose_stack_reads_health_from_healthcheck_and_the_slo_from_its_entries():
    client, (web, db) = two_services()
    box = ComposeStack(client, "web", [web, db])
    web.health, db.health = "healthy", "unhealthy"
    box.measure()
    slots = box.topology.index
    assert box.health[0, slots["web"]] and not box.health[0, slots["db"]]
    assert box.slo[0]  # only web is an entry
    web.status = "paused"
    box.measure()
    assert not box.slo[0]
    assert box.observe()[0, slots["web"], Feature.LATENCY] == 1.0  # frozen: every request times out


def test_a_compose_stack_hands_the_mechanisms_its_containers_and_nothing_of_deeplops():
    client, containers = two_services()
    box = ComposeStack(client, "web", containers)
    assert set(box.handle.containers) == {"web", "db"}
    assert (box.handle.floods, box.handle.ips, box.handle.veths, box.handle.image) == ({}, {}, {}, "")


def test_a_compose_restart_stops_and_starts_the_container_and_counts_as_a_restart():
    import signal

    client, (web, db) = two_services()
    box = ComposeStack(client, "web", [web, db])
    box.apply("db", Repair.RESTART)
    assert db.signals == [signal.SIGTERM] and db.starts == 1 and db.status == "running"
    box.measure()
    slot = box.topology.index["db"]
    assert box.observe()[0, slot, Feature.RESTARTS] > 0
    assert box.observe()[0, slot, Feature.SINCE_REPAIR] == 0.0


def test_a_compose_restart_of_a_removed_container_is_a_changed_stack():
    client, (web, db) = two_services()
    box = ComposeStack(client, "web", [web, db])
    db.removed = True
    with pytest.raises(StackChangedError, match="restart of db: its container was removed meanwhile"):
        box.apply("db", Repair.RESTART)


def test_a_compose_service_gets_only_restart_and_what_its_labels_declare():
    web = compose("web", **{"deeplops.depends_on": "db", "deeplops.rollback": "true"})
    db = compose("db", **{"deeplops.clean": "/data/tmp/*.log", "deeplops.recreate": "yes please"})
    box = ComposeStack(FakeClient([web, db]), "web", [web, db])
    assert box.repairs_of("web") == (Repair.RESTART, Repair.ROLLBACK)
    assert box.repairs_of("db") == (Repair.RESTART, Repair.CLEAN_DISK)
    assert box.refused == ("db: deeplops.recreate='yes please': expected true or false",)
    declares = r"recreate of db: its labels do not declare it \(it may: restart, clean_disk\)"
    with pytest.raises(SandboxError, match=declares):
        box.apply("db", Repair.RECREATE)
    with pytest.raises(SandboxError, match="clean_disk of web: its labels do not declare it"):
        box.apply("web", Repair.CLEAN_DISK)
    assert db.starts == 0 and db.signals == []
    slots = box.topology.index
    seen = box.observe()[0]
    assert seen[slots["db"], Feature.HAS_DISK] == 1.0 and seen[slots["web"], Feature.HAS_DISK] == 0.0


def test_a_compose_start_by_anyone_counts_as_a_restart_and_ours_once():
    client, (web, db) = two_services()
    box = ComposeStack(client, "web", [web, db])
    box.measure()
    slot = box.topology.index["db"]
    db.start()  # its restart policy, or a person: not the sidecar
    box.measure()
    once = box.observe()[0, slot, Feature.RESTARTS]
    assert once == pytest.approx(RESTART_DECAY / RESTARTS_SCALE)
    assert box.observe()[0, box.topology.index["web"], Feature.RESTARTS] == 0.0
    box.apply("db", Repair.RESTART)
    box.measure()
    assert box.observe()[0, slot, Feature.RESTARTS] == pytest.approx(
        (once * RESTARTS_SCALE + 1) * RESTART_DECAY / RESTARTS_SCALE, rel=1e-3)  # fmt: skip


def test_a_compose_service_first_seen_reads_no_deploy_and_a_new_image_reads_one_just_now():
    client, (web, db) = two_services()
    box = ComposeStack(client, "web", [web, db])
    box.measure()
    slot = box.topology.index["db"]
    assert box.observe()[0, slot, Feature.SINCE_DEPLOY] == 1.0
    new = compose("db")
    new.image = "sha256:" + "2" * 64
    new.created = datetime.datetime.fromtimestamp(time.time() - 5, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    again = ComposeStack(FakeClient([web, new]), "web", [web, new])  # attached afresh after the change
    again.measure()
    assert 0.04 <= again.observe()[0, slot, Feature.SINCE_DEPLOY] <= 0.08  # made ~5 s ago, of 100
    assert again.book.previous("db")["Image"] == db.image
    assert again.observe()[0, again.topology.index["web"], Feature.SINCE_DEPLOY] == 1.0


def test_a_compose_rollback_with_no_earlier_deploy_seen_is_refused():
    web, db = compose("web", **{"deeplops.rollback": "true"}), compose("db")
    box = ComposeStack(FakeClient([web, db]), "web", [web, db])
    box.measure()
    with pytest.raises(SandboxError, match="rollback of web: no earlier deploy of it was seen"):
        box.apply("web", Repair.ROLLBACK)


def test_a_sandbox_repair_whose_container_is_gone_is_a_changed_stack():
    class Box:  # what SandboxStack reads of a DockerSandbox; its repair is an edge, as the real one's
        name, topology, client = "demo", load_topology("shop"), FakeClient()
        containers = {"db": FakeContainer("demo-db")}

        @edge
        def repair(self, slots: np.ndarray, repairs: np.ndarray) -> np.ndarray:
            raise not_found("demo-db")

    with pytest.raises(StackChangedError, match="restart of db: its container was removed meanwhile"):
        SandboxStack(Box()).apply("db", Repair.RESTART)


# -- iptables rules ------------------------------------------------------------------------

LISTING = """-P OUTPUT ACCEPT
-A OUTPUT -d 172.18.0.3/32 -p udp -m comment --comment "deeplops:demo:api" -j DROP
-A OUTPUT -d 172.18.0.4/32 -p udp -m comment --comment deeplops:demo:db -j DROP
-A OUTPUT -d 172.19.0.2/32 -p udp -m comment --comment "deeplops:demo2:api" -j DROP
-A OUTPUT -d 10.0.0.1/32 -j ACCEPT
"""


def test_a_sandboxs_blocks_are_found_by_their_comment_quoted_or_not():
    assert host.tagged_rules(LISTING, stack.block_tag("demo")) == [
        ["-d", "172.18.0.3/32", "-p", "udp", "-m", "comment", "--comment", "deeplops:demo:api", "-j", "DROP"],
        ["-d", "172.18.0.4/32", "-p", "udp", "-m", "comment", "--comment", "deeplops:demo:db", "-j", "DROP"],
    ]


def test_a_services_block_is_found_alone():
    assert [r[1] for r in host.tagged_rules(LISTING, stack.block_tag("demo", "api"))] == ["172.18.0.3/32"]


def test_a_sandbox_whose_name_extends_another_keeps_its_blocks():
    assert [r[1] for r in host.tagged_rules(LISTING, stack.block_tag("demo2"))] == ["172.19.0.2/32"]


def test_a_listing_without_blocks_gives_nothing():
    assert host.tagged_rules("-P OUTPUT ACCEPT\n", stack.block_tag("demo")) == []
    assert host.tagged_rules("", stack.block_tag("demo")) == []


def test_unblock_deletes_each_tagged_rule_by_its_own_arguments(monkeypatch):
    deleted: list[list[str]] = []
    monkeypatch.setattr(host, "run", lambda *cmd: LISTING)
    monkeypatch.setattr(host.subprocess, "run", lambda cmd, **_: deleted.append(cmd))
    host.unblock(stack.block_tag("demo"))
    assert [cmd[:5] for cmd in deleted] == [["iptables", "-w", "5", "-D", "OUTPUT"]] * 2
    assert [cmd[5:] for cmd in deleted] == host.tagged_rules(LISTING, stack.block_tag("demo"))


# -- engine errors, translated at the edge -------------------------------------------------


def test_a_missing_object_is_an_engine_error_that_says_so():
    error = translate(not_found("demo-db"))
    assert isinstance(error, EngineError) and isinstance(error, SandboxError) and isinstance(error, DeeplopsError)
    assert error.not_found
    assert str(error) == "Docker engine refused the call (404): No such container: demo-db"


def test_a_refused_call_names_the_status_and_the_engines_explanation():
    error = translate(APIError("500 Server Error", response=FakeResponse(500), explanation="driver failed"))
    assert not error.not_found
    assert str(error) == "Docker engine refused the call (500): driver failed"


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError("Connection aborted"),
        requests.exceptions.ReadTimeout("read timed out"),
        urllib3.exceptions.ProtocolError("Connection broken"),
    ],
)
def test_an_engine_that_does_not_answer_is_an_engine_error(exc):
    error = translate(exc)
    assert str(error).startswith(f"Docker engine not reachable ({type(exc).__name__}: ")
    assert not error.not_found


def test_a_failed_build_and_the_clients_own_errors_are_engine_errors():
    assert str(translate(BuildError("step 2 failed", build_log=[]))) == "Docker engine failed a build: step 2 failed"
    assert str(translate(DockerException("bad config"))) == "Docker engine: bad config"


def test_an_engine_error_is_one_line_of_bounded_length():
    error = translate(APIError("500", response=FakeResponse(500), explanation="line one\nline two\n" + "x" * 1000))
    assert "\n" not in str(error) and len(str(error)) <= 300
    assert "line one line two" in str(error)


def test_the_edge_translates_the_clients_errors_and_keeps_the_original_as_the_cause():
    original = requests.exceptions.ConnectionError("Connection refused")

    @edge
    def call() -> None:
        raise original

    with pytest.raises(EngineError) as caught:
        call()
    assert caught.value.__cause__ is original


@pytest.mark.parametrize("exc", [SandboxError("a sandbox error"), ValueError("a bug"), FileNotFoundError("x")])
def test_the_edge_lets_every_other_error_through_unchanged(exc):
    with pytest.raises(type(exc)) as caught, engine_errors():
        raise exc
    assert caught.value is exc


def test_an_engine_error_survives_pickling():
    error = pickle.loads(pickle.dumps(EngineError("gone", not_found=True)))
    assert (str(error), error.not_found) == ("gone", True)


def test_the_sidecar_retries_an_engine_error():
    assert isinstance(EngineError("engine restarting"), daemon.TRANSIENT)


def test_an_unreachable_engine_on_connect_is_an_engine_error(monkeypatch):
    def refuse(**_: object) -> None:
        raise DockerException("Error while fetching server API version: Connection refused")

    monkeypatch.setattr(docker, "from_env", refuse)
    with pytest.raises(EngineError, match=r"Docker engine not reachable \(DockerException\): start dockerd"):
        stack.connect()


def test_an_unreachable_engine_named_by_docker_host_is_named_in_the_error(monkeypatch):
    def refuse(**_: object) -> None:
        raise DockerException("Error while fetching server API version: Connection refused")

    monkeypatch.setenv("DOCKER_HOST", "unix:///run/elsewhere.sock")
    monkeypatch.setattr(docker, "from_env", refuse)
    with pytest.raises(EngineError) as caught:
        stack.connect()
    assert str(caught.value) == (
        "Docker engine at 'unix:///run/elsewhere.sock' not reachable (DockerException): start dockerd and retry"
    )


@pytest.mark.parametrize("given", ["tcp://10.1.2.3:2375", "ssh://ops@build-7", "build-7:2375"])
def test_an_engine_on_another_machine_is_refused_before_it_is_called(cli, monkeypatch, given):
    # The sandbox acts on its engine's machine (network, cgroups, volumes): another's would be
    # driven half-blind.
    called: list[object] = []
    monkeypatch.setenv("DOCKER_HOST", given)
    monkeypatch.setattr(docker, "from_env", lambda **kw: called.append(kw))
    result = cli("sandbox", "status", "--name", "demo")
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        f"deeplops: error: DOCKER_HOST={given!r} names an engine that may be another machine's: expected this "
        "machine's (a unix:// socket or a loopback address), whose network, cgroups and volumes the sandbox acts on"
    ]
    assert called == []


@pytest.mark.parametrize("given", ["unix:///run/other.sock", "tcp://127.0.0.1:2375", "tcp://localhost:2375",
                                   "tcp://[::1]:2375"])  # fmt: skip
def test_an_engine_of_this_machine_may_be_named_by_docker_host(monkeypatch, given):
    client = FakeClient()
    monkeypatch.setenv("DOCKER_HOST", given)
    monkeypatch.setattr(docker, "from_env", lambda **_: client)
    assert stack.connect() is client


def test_an_engine_that_breaks_off_after_connecting_is_an_engine_error(monkeypatch):
    client = FakeClient()

    def broken(**_: object) -> list[object]:
        raise requests.exceptions.ConnectionError("Connection aborted")

    monkeypatch.setattr(client.api, "containers", broken)
    with pytest.raises(EngineError, match="not reachable"):
        stack.survey(client)


def test_the_cli_reports_an_engine_error_in_one_line(cli, monkeypatch):
    client = FakeClient()

    def broken(**_: object) -> list[object]:
        raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead")

    monkeypatch.setattr(client.api, "containers", broken)
    monkeypatch.setattr(docker, "from_env", lambda **_: client)
    result = cli("sandbox", "status", "--name", "demo")
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err.strip().splitlines() == [
        "deeplops: error: Docker engine not reachable (ProtocolError: Connection broken: IncompleteRead): "
        "is dockerd running?"
    ]


# --- tidying old images -----------------------------------------------------------------------------


class _Image:
    def __init__(self, *tags: str) -> None:
        self.tags = list(tags)


class _Images:
    """The engine's images, whose removal fails as told (by tag)."""

    def __init__(self, images: list[_Image], fails: dict[str, Exception]) -> None:
        self.images, self.fails, self.removed = images, fails, []

    def list(self, name: str) -> list[_Image]:
        return [i for i in self.images if any(t.startswith(name + ":") for t in i.tags)]

    def remove(self, ref: str) -> None:
        if ref in self.fails:
            raise self.fails[ref]
        self.removed.append(ref)


def test_older_builds_are_removed_and_one_the_engine_is_slow_to_delete_is_left_with_a_word():
    images = _Images(
        [_Image("deeplops/sidecar:new"), _Image("deeplops/sidecar:old1"), _Image("deeplops/sidecar:old2")],
        {"deeplops/sidecar:old1": requests.exceptions.ReadTimeout("Read timed out. (read timeout=60)")},
    )
    said: list[str] = []
    image._drop_older(SimpleNamespace(images=images), "deeplops/sidecar", "deeplops/sidecar:new", said.append)  # type: ignore[arg-type]
    assert images.removed == ["deeplops/sidecar:old2"]
    assert any("left the older deeplops/sidecar:old1 in place" in line and "not reachable" in line for line in said)


def test_an_older_build_a_container_uses_is_kept_silently():
    in_use = APIError("409 Client Error", response=FakeResponse(409, "Conflict"), explanation="image is being used")
    images = _Images([_Image("deeplops/service:a"), _Image("deeplops/service:b")], {"deeplops/service:b": in_use})
    said: list[str] = []
    image._drop_older(SimpleNamespace(images=images), "deeplops/service", "deeplops/service:a", said.append)  # type: ignore[arg-type]
    assert images.removed == [] and said == []


# -- releases, memory and connections -----------------------------------------------------


def test_a_release_history_deploys_new_names_and_rolls_back_one_at_a_time():
    from deeplops.dockerbox.releases import History, Release

    first = History()
    assert first.current == Release("r1") and first.rollback() is None
    bad = first.deploy().deploy(broken=True)
    assert [r.name for r in bad.releases] == ["r1", "r2", "r3"] and bad.current.broken
    back = bad.rollback()
    assert back is not None and back.current == Release("r2") and back.made == 3
    assert back.deploy().current.name == "r4"  # a new release never reuses a rolled-back name
    assert back.rollback() == History((Release("r1"),), 3)


def test_a_release_history_keeps_its_newest_releases_only():
    from deeplops.dockerbox.releases import HISTORY_MAX, History

    history = History()
    for _ in range(HISTORY_MAX + 5):
        history = history.deploy()
    assert len(history.releases) == HISTORY_MAX and history.current.name == f"r{HISTORY_MAX + 6}"


def test_a_release_history_round_trips_through_its_label_and_a_bad_label_is_one_line():
    from deeplops.dockerbox import releases

    history = releases.History().deploy(broken=True)
    assert releases.from_label(releases.to_label(history)) == history
    assert releases.from_label(None) == releases.History()  # a container made before releases
    for bad in ("", "[]", '{"releases": [], "made": 1}', '{"releases": [["r1", 1]], "made": 1}',
                '{"releases": [["r1", false], ["r2", false]], "made": 1}', "x" * 5000):  # fmt: skip
        with pytest.raises(SandboxError, match="is not a release history") as err:
            releases.from_label(bad, "db")
        assert "\n" not in str(err.value)
    told = {"DEEPLOPS_RELEASE": "r2", "DEEPLOPS_RELEASE_BROKEN": "1", "DEEPLOPS_RELEASE_LEAKS": "0"}
    assert releases.environment(history) == told | {"DEEPLOPS_LEAK_MB_PER_S": "16.0"}


def test_a_label_written_before_leaks_reads_as_releases_that_do_not_leak_and_is_written_back_with_them():
    from deeplops.dockerbox import releases

    old = releases.from_label('{"releases": [["r1", false], ["r2", true]], "made": 2}')
    assert old == releases.History((releases.Release("r1"), releases.Release("r2", broken=True)), 2)
    assert not any(r.leaks for r in old.releases)
    leaking = old.deploy(leaks=True)
    assert leaking.current == releases.Release("r3", broken=False, leaks=True)
    label = releases.to_label(leaking)
    assert '[["r1", false, false], ["r2", true, false], ["r3", false, true]]' in label
    assert releases.from_label(label) == leaking
    assert releases.environment(leaking)["DEEPLOPS_RELEASE_LEAKS"] == "1"
    assert releases.from_label('{"releases": [["r1", false], ["r2", false, true]], "made": 2}').current.leaks
    for bad in ('{"releases": [["r1", false, 1]], "made": 1}', '{"releases": [["r1", false, true, true]], "made": 1}',
                '{"releases": [["r1"]], "made": 1}', '{"releases": [["r1", false, null]], "made": 1}'):  # fmt: skip
        with pytest.raises(SandboxError, match="is not a release history"):
            releases.from_label(bad, "db")


def test_a_memory_leak_on_server_software_is_refused_in_one_line_before_anything_is_touched():
    from deeplops.dockerbox import mechanisms
    from deeplops.faults import Fault

    handle = SimpleNamespace(topology=load_topology("store"), containers={}, releases={})
    for service, kind in (("db", "postgres"), ("cache", "redis"), ("gateway", "nginx")):
        with pytest.raises(SandboxError, match=f"memory_leak on {service}: it is a {kind}") as err:
            mechanisms.INJECT[Fault.MEMORY_LEAK](handle, service)  # type: ignore[arg-type]
        assert "\n" not in str(err.value)
    assert handle.releases == {}


def test_a_container_starts_on_its_release_and_carries_its_history():
    from deeplops.dockerbox import releases

    history = releases.History().deploy(broken=True)
    spec = load_topology("store").services[0]
    runs: list[dict] = []
    client = SimpleNamespace(
        containers=SimpleNamespace(run=lambda image, **kw: runs.append(kw)),
        api=SimpleNamespace(create_endpoint_config=lambda **kw: kw),
    )
    stack.start_service(client, "box", spec, "img", history=history)  # type: ignore[arg-type]
    run = runs[-1]
    assert run["environment"]["DEEPLOPS_RELEASE"] == "r2" and run["environment"]["DEEPLOPS_RELEASE_BROKEN"] == "1"
    assert releases.from_label(run["labels"][releases.LABEL]) == history


V1_STAT = "cache 4096\nrss 1000\nshmem 8192\ntotal_cache 40960\ntotal_rss 123456\ntotal_shmem 8192\n"
V2_STAT = "anon 654321\nfile 99999\nshmem 8192\nanon_thp 0\n"


def test_resident_memory_is_v1_total_rss_or_v2_anon_and_never_the_volume_files():
    assert host.anon_bytes(V1_STAT) == 123456
    assert host.anon_bytes(V2_STAT) == 654321
    assert host.anon_bytes("cache 1\nshmem 2\n") is None


def test_memory_is_read_from_the_first_cgroup_that_has_the_container(tmp_path, monkeypatch):
    v1, v2 = tmp_path / "v1" / "{id}", tmp_path / "v2" / "{id}"
    monkeypatch.setattr(host, "MEMORY_STAT_FILES", (str(v1 / "memory.stat"), str(v2 / "memory.stat")))
    assert host.memory_bytes("abc") is None
    (tmp_path / "v2" / "abc").mkdir(parents=True)
    (tmp_path / "v2" / "abc" / "memory.stat").write_text(V2_STAT)
    assert host.memory_bytes("abc") == 654321


def test_connections_are_used_over_limit_and_nothing_reported_reads_zero():
    from deeplops.dockerbox.sandbox import connection_share

    assert connection_share({"connections": {"used": 3, "limit": 30}}) == pytest.approx(0.1)
    assert connection_share({"connections": {"used": 90, "limit": 30}}) == 1.0
    for body in ({}, {"connections": None}, {"connections": {"used": 3, "limit": 0}},
                 {"connections": {"used": "3", "limit": 30}}):  # fmt: skip
        assert connection_share(body) == 0.0


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan"), "0.1"])
def test_a_deploy_rate_outside_0_1_is_refused_in_one_line(rate):
    from deeplops.dockerbox.sandbox import DockerSandbox

    with pytest.raises(SandboxError, match="deploy_rate must be a chance"):
        DockerSandbox(load_topology("store"), deploy_rate=rate)


@pytest.fixture
def programs(monkeypatch: pytest.MonkeyPatch):
    """sandbox/'s service.py and launcher.py as modules."""
    from deeplops.catalog import data_dir

    monkeypatch.syspath_prepend(str(data_dir("sandbox")))
    import launcher
    import service

    yield SimpleNamespace(service=service, launcher=launcher)
    for name in ("launcher", "clients", "service"):  # top-level names of the image's /app, not of deeplops
        sys.modules.pop(name, None)


def test_a_program_reads_its_release_and_refuses_a_bad_one_in_one_line(programs):
    load = programs.service.load_config
    assert (load({"DEEPLOPS_SERVICE": "a"}).release, load({"DEEPLOPS_SERVICE": "a"}).broken) == ("r1", False)
    got = load({"DEEPLOPS_SERVICE": "a", "DEEPLOPS_RELEASE": "r7", "DEEPLOPS_RELEASE_BROKEN": "1"})
    assert (got.release, got.broken) == ("r7", True)
    for env, word in (({"DEEPLOPS_RELEASE": "r 1"}, "DEEPLOPS_RELEASE"), ({"DEEPLOPS_RELEASE": ""}, "DEEPLOPS_RELEASE"),
                      ({"DEEPLOPS_RELEASE_BROKEN": "yes"}, "DEEPLOPS_RELEASE_BROKEN")):  # fmt: skip
        with pytest.raises(programs.service.ConfigError, match=word):
            load({"DEEPLOPS_SERVICE": "a", **env})


def test_a_program_reads_a_leaking_release_and_its_rate_and_refuses_bad_ones_in_one_line(programs):
    load = programs.service.load_config
    assert (load({"DEEPLOPS_SERVICE": "a"}).leaks, load({"DEEPLOPS_SERVICE": "a"}).leak_mb_per_s) == (False, 0.0)
    got = load({"DEEPLOPS_SERVICE": "a", "DEEPLOPS_RELEASE_LEAKS": "1", "DEEPLOPS_LEAK_MB_PER_S": "16.0"})
    assert (got.leaks, got.leak_mb_per_s) == (True, 16.0)
    for env, word in (({"DEEPLOPS_RELEASE_LEAKS": "true", "DEEPLOPS_LEAK_MB_PER_S": "16"}, "DEEPLOPS_RELEASE_LEAKS"),
                      ({"DEEPLOPS_RELEASE_LEAKS": "1"}, "DEEPLOPS_LEAK_MB_PER_S must be set"),
                      ({"DEEPLOPS_LEAK_MB_PER_S": "0"}, "DEEPLOPS_LEAK_MB_PER_S must be a positive number of MiB"),
                      ({"DEEPLOPS_LEAK_MB_PER_S": "inf"}, "DEEPLOPS_LEAK_MB_PER_S"),
                      ({"DEEPLOPS_LEAK_MB_PER_S": "x"}, "DEEPLOPS_LEAK_MB_PER_S")):  # fmt: skip
        with pytest.raises(programs.service.ConfigError, match=word) as err:
            load({"DEEPLOPS_SERVICE": "a", **env})
        assert "\n" not in str(err.value)


def test_a_leaking_program_takes_its_rate_of_written_memory_and_holds_it(programs):
    import threading
    import time

    config = programs.service.load_config(
        {"DEEPLOPS_SERVICE": "a", "DEEPLOPS_RELEASE_LEAKS": "1", "DEEPLOPS_LEAK_MB_PER_S": "40"}
    )
    leaking = programs.service.Service(config)
    thread = threading.Thread(target=leaking.leak, daemon=True)
    start = time.monotonic()
    thread.start()
    time.sleep(0.55)
    leaking.end()
    thread.join(1.0)
    elapsed = time.monotonic() - start
    assert not thread.is_alive()  # it stops with the program
    slice_bytes = 4 * 2**20  # 40 MiB a second, a slice every 0.1 s
    # Every page written: resident, not merely reserved.
    assert all(len(piece) == slice_bytes and piece[::4096] == b"\x01" * (slice_bytes // 4096)
               for piece in leaking.leaked)  # fmt: skip
    assert 5 <= len(leaking.leaked) <= elapsed / 0.1 + 1
    assert programs.service.Service.OWN_CODE and not programs.launcher.Daemon.OWN_CODE  # servers never leak


def test_the_broken_nginx_release_proxies_to_a_port_nothing_listens_on(programs):
    good = programs.launcher.nginx_config("gw", 8080, ("app", 8080), 0.5, "127.0.0.11")
    bad = programs.launcher.nginx_config("gw", 8080, ("app", 8080), 0.5, "127.0.0.11", "r2", broken=True)
    assert "set $upstream app:8080;" in good and "set $upstream app:8081;" in bad
    assert '"release": "r2", "broken": true' in bad


class _JustDied(FakeContainer):
    """A container whose process has just died: the engine still reads it as running, so its first
    forced removal fails as the engine's does ("Could not kill running container ... is not
    running"); the engine records the exit by the next inspection."""

    lagging: bool = False

    def remove(self, force: bool = False) -> None:
        if self.status == "running":
            self.lagging = True
            explanation = (
                f"Could not kill running container {self.id}, cannot remove - Container {self.id} is not running"
            )
            raise APIError("500 Server Error", response=FakeResponse(500), explanation=explanation)
        self.removed = True

    def reload(self) -> None:
        super().reload()
        if self.lagging:
            self.status = "exited"


def test_a_container_whose_exit_the_engine_has_not_recorded_yet_is_still_removed():
    container = _JustDied("demo-api")
    stack.remove_container(container)
    assert container.removed and container.status == "exited"


def test_any_other_refusal_to_remove_a_container_is_raised():
    class Refusing(FakeContainer):
        def remove(self, force: bool = False) -> None:
            raise APIError("500 Server Error", response=FakeResponse(500), explanation="driver failed")

    container = Refusing("demo-api")
    with pytest.raises(APIError, match="driver failed"):
        stack.remove_container(container)
    assert not container.removed


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", (0, {})),  # killed before its body
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\n\r\n{", (503, {})),  # an error's, cut off
        (b'HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{"ok": true}', (200, {"ok": True})),
        (b"", (0, {})),  # closed without a word
    ],
)
def test_a_probe_answered_partly_by_a_process_killed_mid_answer_reads_as_no_answer(monkeypatch, answer, expected):
    """An OOM-killed service cut a probe's answer short: http.client raised IncompleteRead, which is
    no OSError, and the tick failed instead of reading the service down."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setattr(stack, "PORT", listener.getsockname()[1])
    try:
        assert stack.http_json("127.0.0.1", "/health", 5.0) == expected
    finally:
        listener.close()


def test_a_compose_service_someone_stopped_is_theirs_until_it_starts_again():
    client, (web, db) = two_services()
    box = ComposeStack(client, "web", [web, db])
    client.event(db, "kill", time.time(), signal="15")  # docker stop, or docker-compose up replacing it
    db.status = "exited"
    box.measure()
    assert box.stopped_by_owner("db") and not box.stopped_by_owner("web")
    client.event(db, "start", time.time())
    box.measure()
    assert not box.stopped_by_owner("db")


def test_a_compose_stop_of_the_sidecars_own_making_or_a_kill_is_no_owners_stop():
    client, (web, db) = two_services()
    box = ComposeStack(client, "web", [web, db])
    box.apply("db", Repair.RESTART)
    client.event(db, "kill", sum(box._ours["db"]) / 2, signal="15")  # its own SIGTERM, through the engine
    client.event(web, "kill", time.time(), signal="9")  # a crash or a chaos kill: to be repaired
    box.measure()
    assert not box.stopped_by_owner("db") and not box.stopped_by_owner("web")


def test_a_compose_service_starting_is_unhealthy_with_no_failures_yet():
    client, (web, db) = two_services()
    box = ComposeStack(client, "web", [web, db])
    web.health, db.health = "starting", "unhealthy"
    box.measure()
    slots, seen = box.topology.index, box.observe()[0]
    assert seen[slots["web"], Feature.HEALTHY] == 0.0 and seen[slots["web"], Feature.ERROR_RATE] == 0.0
    assert seen[slots["db"], Feature.HEALTHY] == 0.0 and seen[slots["db"], Feature.ERROR_RATE] == 1.0


def test_a_compose_stop_after_the_last_reading_is_seen_right_before_a_repair():
    client, (web, db) = two_services()
    box = ComposeStack(client, "web", [web, db])
    box.measure()
    client.event(db, "kill", time.time(), signal="15")  # docker-compose down, stopping db after the reading
    assert box.stopped_by_owner("db")
