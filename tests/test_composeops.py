"""The repairs a Compose service declares, on its container (``deeplops.sidecar.composeops``): a
replace makes the same container again from its creation spec and puts the old one back when it
cannot; recreate empties the project's own volumes and nothing else; clean deletes only inside the
container's own directories; disk_used reads the fullest of them. The checks on a declared path's
shape, and the readings of a creation spec and of df, without an engine; the rest on real
containers (marked docker), one module's worth of them removed at the end."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from docker.errors import NotFound

from deeplops.errors import SandboxError
from deeplops.sidecar import composeops, deploys

PREFIX = f"dlcops-{os.getpid()}"
TEST_LABEL = "deeplops.test"
"""Every container the module makes wears TEST_LABEL=PREFIX, and is removed at its end."""
PROJECT = PREFIX
"""The Compose project its containers and volumes say they belong to."""


class FakeContainer:
    """A container whose exec answers ``said`` (status, stdout): enough for the checks made
    before, or instead of, the engine."""

    def __init__(self, attrs: dict[str, Any] | None = None, said: tuple[int, bytes] = (0, b"")) -> None:
        self.name, self.id, self.said = "store_queue_1", "f" * 64, said
        self.attrs = attrs or {"Mounts": [], "HostConfig": {}}
        self.execs: list[list[str]] = []

    def exec_run(self, cmd: list[str], demux: bool = False) -> tuple[int, Any]:
        self.execs.append(cmd)
        code, out = self.said
        return code, ((out, b"") if demux else out)


@pytest.mark.parametrize(
    "path",
    ["data/tmp", "/data/../etc", "/data/./tmp", "/data//tmp", "/data/tmp/", "/", "/da*/tmp", "/*.log", "/a\nb"],
)
def test_a_declared_path_that_is_not_plainly_absolute_is_refused_before_anything_runs(path):
    box = FakeContainer()
    with pytest.raises(SandboxError, match=r"^clean of store_queue_1: .*expected /DIR"):
        composeops.clean(box, ("/data/ok", path))  # type: ignore[arg-type]
    assert box.execs == []


def test_a_clean_that_cannot_run_find_says_the_image_needs_sh_and_find():
    box = FakeContainer(said=(127, b"sh: 1: find: not found"))
    with pytest.raises(SandboxError, match=r"sh or find cannot run inside it .*expected an image with both"):
        composeops.clean(box, ("/data/tmp",))  # type: ignore[arg-type]


def compose1_attrs() -> dict[str, Any]:
    """An inspect of a Compose 1.x container: named project_service_1, its hostname and one of its
    aliases its own short ID, on the project's network and one more."""
    short = "abcdef012345"
    return {
        "Id": short + "6" * 52,
        "Name": "/store_queue_1",
        "Image": "sha256:" + "9" * 64,
        "Config": {"Hostname": short, "Image": "deeplops/service:latest", "Env": ["A=1"], "Labels": {"x": "y"}},
        "HostConfig": {"NetworkMode": "store_default", "Memory": 1 << 26},
        "NetworkSettings": {"Networks": {
            "store_back": {"Aliases": ["queue", short], "NetworkID": "n2", "IPAMConfig": None},
            "store_default": {"Aliases": ["queue", short], "NetworkID": "n1", "Links": ["db:db"]},
        }},
    }  # fmt: skip


def test_a_creation_spec_is_the_create_body_less_the_old_containers_own_identity():
    attrs = compose1_attrs()
    box = FakeContainer(attrs)
    box.id = attrs["Id"]
    spec = composeops.creation_spec(box)  # type: ignore[arg-type]
    assert "Hostname" not in spec and spec["Env"] == ["A=1"] and spec["Labels"] == {"x": "y"}
    assert spec["Image"] == attrs["Image"]  # the ID it runs, not the tag, which may have moved since
    assert spec["HostConfig"] == attrs["HostConfig"] and spec[composeops.NAME] == "store_queue_1"
    first = {"store_default": {"Aliases": ["queue"], "Links": ["db:db"]}}
    assert spec["NetworkingConfig"] == {"EndpointsConfig": first}
    assert spec[composeops.OTHER_NETWORKS] == {"store_back": {"Aliases": ["queue"]}}
    assert json.loads(json.dumps(spec)) == spec
    spec["HostConfig"]["Memory"] = 0
    assert attrs["HostConfig"]["Memory"] == 1 << 26  # a copy of its own


def test_a_hostname_of_the_users_own_is_kept():
    attrs = compose1_attrs()
    attrs["Config"]["Hostname"] = "queue-host"
    box = FakeContainer(attrs)
    box.id = attrs["Id"]
    assert composeops.creation_spec(box)["Hostname"] == "queue-host"  # type: ignore[arg-type]


def test_disk_used_is_the_fullest_file_system_of_the_dirs():
    df = (b"Filesystem     1024-blocks  Used Available Capacity Mounted on\n"
          b"tmpfs                 8192  8192         0     100% /data dir\n"
          b"overlay           10000000  2500000  7500000      25% /\n")  # fmt: skip
    box = FakeContainer(said=(0, df))
    assert composeops.disk_used(box, ("/data dir", "/srv")) == 1.0  # type: ignore[arg-type]
    assert box.execs == [["df", "-Pk", "--", "/data dir", "/srv"]]
    assert composeops.disk_used(FakeContainer(said=(127, b"df: not found")), ("/data",)) is None  # type: ignore[arg-type]


# --- on a real engine -------------------------------------------------------------------------


@dataclass
class Engine:
    """The module's share of the engine: a client, the service image, a network, a host folder."""

    client: Any
    image: str
    network: str
    host_dir: Path

    def run(self, name: str, **options: Any) -> Any:
        """A container of the module's, sleeping, on its network under the alias ``name``."""
        labels = {TEST_LABEL: PREFIX, deploys.COMPOSE_PROJECT: PROJECT, **options.pop("labels", {})}
        return self.client.containers.run(
            self.image, ["sleep", "infinity"], detach=True, name=f"{PREFIX}-{name}", labels=labels,
            network=self.network,
            networking_config={self.network: self.client.api.create_endpoint_config(aliases=[name])},
            **options,
        )  # fmt: skip

    def volume(self, name: str, project: str | None = PROJECT, **options: Any) -> Any:
        labels = {deploys.COMPOSE_PROJECT: project} if project else {}
        return self.client.volumes.create(name=f"{PREFIX}-{name}", labels=labels, **options)


def sh(container: Any, script: str) -> str:
    """What ``script`` prints inside the container; it must succeed."""
    code, out = container.exec_run(["sh", "-c", script])
    assert code == 0, out.decode(errors="replace")
    return str(out.decode())


@pytest.fixture(scope="module")
def engine(docker_engine: None) -> Iterator[Engine]:
    """The engine, with everything the module makes there (and on the host) removed at its end."""
    from deeplops.dockerbox import image, stack

    client = stack.connect()
    client.networks.create(PREFIX, driver="bridge", labels={TEST_LABEL: PREFIX})
    host_dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    try:
        yield Engine(client, image.ensure_image(client), PREFIX, host_dir)
    finally:
        made = client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={PREFIX}"})
        volumes = {m["Name"] for c in made for m in c.attrs["Mounts"] if m["Type"] == "volume"}
        for container in made:
            container.remove(force=True, v=True)
        volumes |= {v.name for v in client.volumes.list() if v.name.startswith(PREFIX)}
        for name in volumes:
            with contextlib.suppress(NotFound):  # an anonymous one goes with its container
                client.volumes.get(name).remove(force=True)
        for net in client.networks.list(names=[PREFIX, f"{PREFIX}-b"]):
            net.remove()
        shutil.rmtree(host_dir)


@pytest.fixture(scope="module")
def box(engine: Engine) -> Any:
    """The container cleaned and measured: tmpfs mounts at /data and below /srv/c, the host's
    folder bound at /hostdir, and a volume at /vol with another host folder bound below it."""
    (engine.host_dir / "below-vol").mkdir()
    (engine.host_dir / "below-vol" / "keep").write_text("host")
    (engine.host_dir / "keep").write_text("host")
    volume = engine.volume("vol")
    return engine.run(
        "box",
        tmpfs={"/data": "size=8m", "/srv/c/mnt": "size=1m"},
        volumes={str(engine.host_dir): {"bind": "/hostdir"}, volume.name: {"bind": "/vol"},
                 str(engine.host_dir / "below-vol"): {"bind": "/vol/host"}},
    )  # fmt: skip


def listing(container: Any, directory: str) -> list[str]:
    """Every path below ``directory``, relative, sorted."""
    return sorted(sh(container, f"cd {directory} && find . -mindepth 1").split())


@pytest.mark.docker
def test_clean_empties_a_directory_but_keeps_it_and_the_tmpfs_mounted_below_it(box):
    sh(box, "cd /srv/c && touch a .hidden 'odd name' mnt/keep && mkdir -p sub/deep && touch sub/deep/x")
    assert composeops.clean(box, ("/srv/c",)) == 6  # a, .hidden, 'odd name', sub, sub/deep, sub/deep/x
    assert listing(box, "/srv/c") == ["./mnt", "./mnt/keep"]


@pytest.mark.docker
def test_clean_of_patterns_deletes_only_the_matching_entries_of_the_directory(box):
    sh(box, "mkdir -p /srv/p/temp-2 /srv/p/keepdir && cd /srv/p && "
            "touch temp-1 temp-2/inner app.log keep.txt keepdir/temp-3 keepdir/old.log")  # fmt: skip
    assert composeops.clean(box, ("/srv/p/temp-*", "/srv/p/*.log")) == 4
    assert listing(box, "/srv/p") == ["./keep.txt", "./keepdir", "./keepdir/old.log", "./keepdir/temp-3"]


@pytest.mark.docker
def test_clean_removes_a_symlink_never_its_target(box, engine):
    sh(box, "mkdir -p /srv/s /srv/outside && touch /srv/outside/f /etc/keepme && cd /srv/s && "
            "ln -s /hostdir/keep to-host && ln -s /etc/keepme to-etc && ln -s /srv/outside to-dir")  # fmt: skip
    assert composeops.clean(box, ("/srv/s",)) == 3
    assert listing(box, "/srv/s") == [] and listing(box, "/srv/outside") == ["./f"]
    assert sh(box, "ls /etc/keepme").strip() == "/etc/keepme"
    assert (engine.host_dir / "keep").read_text() == "host"


@pytest.mark.docker
def test_clean_refuses_a_directory_reached_through_a_symlink(box):
    sh(box, "mkdir -p /srv/real && touch /srv/real/f && ln -sfn /srv/real /srv/link && ln -sfn /srv /srv-link")
    with pytest.raises(SandboxError, match=r"/srv/link is reached through a symlink \(/srv/link -> '/srv/real'\)"):
        composeops.clean(box, ("/srv/link",))
    with pytest.raises(SandboxError, match="/srv-link/real is reached through a symlink"):
        composeops.clean(box, ("/srv-link/real",))
    assert listing(box, "/srv/real") == ["./f"]


@pytest.mark.docker
def test_clean_refuses_a_directory_in_a_bind_mount_of_the_host(box, engine):
    with pytest.raises(SandboxError, match=f"/hostdir is in a bind mount of the host's {engine.host_dir}"):
        composeops.clean(box, ("/hostdir",))
    assert (engine.host_dir / "keep").read_text() == "host"


@pytest.mark.docker
def test_clean_of_a_volume_never_deletes_in_a_host_folder_bound_below_it_on_the_same_disk(box, engine):
    sh(box, "mkdir -p /vol/sub && touch /vol/a /vol/sub/b")
    assert composeops.clean(box, ("/vol",)) == 3
    assert listing(box, "/vol") == ["./host", "./host/keep"]
    assert (engine.host_dir / "below-vol" / "keep").read_text() == "host"


@pytest.mark.docker
def test_clean_refuses_a_missing_directory_and_then_cleans_none_of_the_others(box):
    sh(box, "mkdir -p /srv/m && touch /srv/m/f")
    with pytest.raises(SandboxError, match="/srv/nope is not a directory it can enter"):
        composeops.clean(box, ("/srv/m", "/srv/nope"))
    assert listing(box, "/srv/m") == ["./f"]


@pytest.mark.docker
def test_clean_refuses_a_kernel_file_system(box):
    with pytest.raises(SandboxError, match="/proc/sys/kernel is on a proc mount at /proc/sys"):
        composeops.clean(box, ("/proc/sys/kernel",))


@pytest.mark.docker
def test_disk_used_is_the_fullest_tmpfs_of_the_dirs(box):
    assert composeops.disk_used(box, ("/data",)) < 0.01
    box.exec_run(["dd", "if=/dev/zero", "of=/data/fill", "bs=1M"])  # until ENOSPC
    full = composeops.disk_used(box, ("/data",))
    assert full is not None and full > 0.9
    assert composeops.disk_used(box, ("/srv", "/data")) == full > composeops.disk_used(box, ("/srv",))
    sh(box, "rm /data/fill")


@pytest.mark.docker
def test_a_container_not_running_has_no_disk_reading_and_is_not_cleaned(engine):
    stopped = engine.client.containers.create(engine.image, ["true"], name=f"{PREFIX}-stopped",
                                              labels={TEST_LABEL: PREFIX})  # fmt: skip
    assert composeops.disk_used(stopped, ("/",)) is None
    with pytest.raises(SandboxError, match=r"is not running.*expected it running"):
        composeops.clean(stopped, ("/srv",))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def web(engine: Engine, name: str) -> Any:
    """A container with what a Compose service may set: a published port, a named volume, an
    anonymous one, a tmpfs, environment, a HEALTHCHECK, memory and CPU limits, a restart policy,
    and a second network, each network with an alias."""
    data = engine.volume(f"{name}-data")
    check = {"test": ["CMD", "true"], "interval": 1_000_000_000, "retries": 1}
    made = engine.run(
        name, ports={"8080/tcp": free_port()}, volumes=[f"{data.name}:/data", "/anon"],
        tmpfs={"/scratch": "size=4m"}, environment={"SERVICE": name}, healthcheck=check, mem_limit="64m",
        nano_cpus=500_000_000, restart_policy={"Name": "always"},
    )  # fmt: skip
    nets = engine.client.networks.list(names=[f"{PREFIX}-b"])
    net = nets[0] if nets else engine.client.networks.create(f"{PREFIX}-b", labels={TEST_LABEL: PREFIX})
    net.connect(made, aliases=[f"{name}-b"])
    made.reload()
    return made


def volumes_of(container: Any) -> dict[str, str]:
    return {m["Destination"]: m["Name"] for m in container.attrs["Mounts"] if m["Type"] == "volume"}


def left_behind(engine: Engine, name: str) -> list[str]:
    """The module's containers but ``name`` whose name starts with it (a replacement, an old one set aside)."""
    found = engine.client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={PREFIX}"})
    return [c.name for c in found if c.name.startswith(name) and c.name != name]


@pytest.mark.docker
def test_a_replace_makes_the_same_container_again_from_its_creation_spec(engine, box):
    old = web(engine, "web")
    was = copy.deepcopy(old.attrs)
    new = composeops.replace(engine.client, old, composeops.creation_spec(old), "rollback of web")
    now = new.attrs
    assert new.id != old.id and new.name == old.name and new.status == "running"
    assert now["Image"] == was["Image"]
    for key in ("Env", "Cmd", "Healthcheck", "Labels", "ExposedPorts"):
        assert now["Config"][key] == was["Config"][key], key
    assert now["Config"]["Hostname"] == new.id[:12]
    for key in ("Memory", "NanoCpus", "PortBindings", "Tmpfs", "RestartPolicy"):
        assert now["HostConfig"][key] == was["HostConfig"][key], key
    anonymous = volumes_of(old)["/anon"]  # its data goes along, as Compose keeps it: named in the new one's binds
    assert now["HostConfig"]["Binds"] == [was["HostConfig"]["Binds"][0], f"{anonymous}:/anon"]
    assert volumes_of(new) == volumes_of(old)
    networks = now["NetworkSettings"]["Networks"]
    assert sorted(networks[PREFIX]["Aliases"]) == sorted(["web", new.id[:12]])
    assert sorted(networks[f"{PREFIX}-b"]["Aliases"]) == sorted(["web-b", new.id[:12]])
    assert sh(box, "getent hosts web").split()[0] == networks[PREFIX]["IPAddress"]
    assert left_behind(engine, new.name) == []
    assert engine.client.containers.list(all=True, filters={"id": old.id}) == []


@pytest.mark.docker
def test_a_replace_whose_container_cannot_start_puts_the_old_one_back(engine):
    old = web(engine, "broken")
    spec = {**composeops.creation_spec(old), "Cmd": ["/no/such/program"]}
    with pytest.raises(SandboxError, match="^rollback of broken: .*; the old container runs again as " + old.name):
        composeops.replace(engine.client, old, spec, "rollback of broken")
    old.reload()
    assert old.name == f"{PREFIX}-broken" and old.status == "running"
    assert old.attrs["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert left_behind(engine, old.name) == []
    for name in volumes_of(old).values():
        engine.client.volumes.get(name)  # the anonymous volume too: not removed with the failed one


@pytest.mark.docker
def test_a_replace_to_an_image_gone_is_refused_before_the_old_one_stops(engine):
    old = engine.run("gone")
    old.reload()
    started = old.attrs["State"]["StartedAt"]
    spec = {**composeops.creation_spec(old), "Image": "sha256:" + "0" * 64}
    with pytest.raises(SandboxError, match="rollback of gone: its image sha256:000000000000 is gone from the engine"):
        composeops.replace(engine.client, old, spec, "rollback of gone")
    old.reload()
    assert old.status == "running" and old.attrs["State"]["StartedAt"] == started


def tmpfs_volume(engine: Engine, name: str, project: str | None = PROJECT) -> Any:
    return engine.volume(name, project, driver="local",
                         driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=4m"})  # fmt: skip


@pytest.mark.docker
def test_recreate_empties_the_projects_volumes_and_keeps_the_rest(engine):
    volume = tmpfs_volume(engine, "db-data")
    old = engine.run("db", volumes={volume.name: {"bind": "/data"}}, environment={"SERVICE": "db"})
    sh(old, "echo data > /data/file")
    new = composeops.recreate(engine.client, old, PROJECT)
    assert new.name == old.name and new.id != old.id and new.status == "running"
    assert new.attrs["Config"]["Env"] == old.attrs["Config"]["Env"]
    assert sh(new, "ls -A /data; df -k /data | tail -1").split()[:2] == ["tmpfs", "4096"]  # empty, and 4 MiB again
    again = engine.client.volumes.get(volume.name).attrs
    assert again["Options"] == volume.attrs["Options"] and again["Labels"] == volume.attrs["Labels"]


@pytest.mark.docker
def test_recreate_refuses_a_volume_outside_the_project_before_touching_anything(engine):
    ours, theirs = tmpfs_volume(engine, "ours"), tmpfs_volume(engine, "theirs", project=None)
    old = engine.run("mixed", volumes={ours.name: {"bind": "/ours"}, theirs.name: {"bind": "/theirs"}})
    sh(old, "echo data > /ours/file && echo data > /theirs/file")
    with pytest.raises(SandboxError, match=f"recreate of {old.name}: its volume {theirs.name} has no project label"):
        composeops.recreate(engine.client, old, PROJECT)
    old.reload()
    assert old.status == "running" and sh(old, "cat /ours/file /theirs/file") == "data\ndata\n"


@pytest.mark.docker
def test_recreate_refuses_a_volume_another_container_mounts(engine):
    shared = tmpfs_volume(engine, "shared")
    old = engine.run("one", volumes={shared.name: {"bind": "/data"}})
    other = engine.run("two", volumes={shared.name: {"bind": "/data"}})
    sh(old, "echo data > /data/file")
    with pytest.raises(SandboxError, match=f"its volume {shared.name} is also mounted by {other.name}"):
        composeops.recreate(engine.client, old, PROJECT)
    assert sh(old, "cat /data/file") == "data\n"
