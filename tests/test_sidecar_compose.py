"""The sidecar on a user's own Compose project: the repairs its labels declare, on real containers.

One project for the module (docker-compose, the deeplops service image): ``app`` declares
rollback, ``files`` a cleanable path on a small disk, ``plain`` nothing. Each test runs the
sidecar as deployed, a process, with the runbook (its rules say which repair a symptom calls for,
so what is tested is what the stack allows, not what a network learned).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_sidecar import Running, stable

pytestmark = pytest.mark.docker

COMPOSE = """\
version: "2.4"
x-service: &service
  image: ${DL_IMAGE}
  command: ["python3", "-u", "/app/service.py"]
  cpus: 0.25
  mem_limit: 128m
  stop_grace_period: 2s
  healthcheck:
    test: ["CMD", "python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/ping', timeout=1)"]
    interval: 1s
    timeout: 1s
    retries: 1
    start_period: 3s
services:
  app:
    <<: *service
    environment: {DEEPLOPS_SERVICE: app, DEEPLOPS_DEPENDS: "", DEEPLOPS_DATA: "",
                  DEEPLOPS_RELEASE: "${APP_RELEASE:-r1}", DEEPLOPS_RELEASE_BROKEN: "${APP_BROKEN:-0}"}
    labels: {deeplops.rollback: "true", deeplops.entry: "true"}
  files:
    <<: *service
    environment: {DEEPLOPS_SERVICE: files, DEEPLOPS_DEPENDS: "", DEEPLOPS_DATA: /data}
    labels: {deeplops.clean: "/data/junk-*"}
    volumes: ["files-data:/data"]
  plain:
    <<: *service
    environment: {DEEPLOPS_SERVICE: plain, DEEPLOPS_DEPENDS: "", DEEPLOPS_DATA: /data}
    volumes: ["plain-data:/data"]
  holder:  # keeps the tmpfs disks mounted while the services restart, as real disks stay
    image: ${DL_IMAGE}
    command: ["sleep", "infinity"]
    labels: {deeplops.ignore: "true"}
    volumes: ["files-data:/files", "plain-data:/plain"]
volumes:
  files-data: {driver_opts: {type: tmpfs, device: tmpfs, o: "size=8m"}}
  plain-data: {driver_opts: {type: tmpfs, device: tmpfs, o: "size=8m"}}
"""
FILL = "import sys\ntry:\n    open(sys.argv[1], 'wb').write(b'x' * (16 << 20))\nexcept OSError:\n    pass\n"
"""Writes the file until the disk is full (the 8 MiB disk ends it)."""


class Project:
    """The module's Compose project: its name, a docker-compose runner, its containers."""

    def __init__(self, folder: Path, image: str) -> None:
        from deeplops.dockerbox import stack

        self.name = f"dlsc{os.getpid()}"
        self.file = folder / "docker-compose.yml"
        self.file.write_text(COMPOSE)
        self.env = {**os.environ, "DL_IMAGE": image}
        self.client = stack.connect()

    def compose(self, *args: str, **env: str) -> str:
        done = subprocess.run(["docker-compose", "-f", str(self.file), "-p", self.name, *args],
                              env={**self.env, **env}, capture_output=True, text=True, timeout=180)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    def container(self, service: str):
        return self.client.containers.get(f"{self.name}_{service}_1")

    def env_of(self, service: str) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.container(service).attrs["Config"]["Env"])

    def healthy(self, *services: str) -> bool:
        return all(self.container(s).attrs["State"].get("Health", {}).get("Status") == "healthy" for s in services)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Iterator[Project]:
    from deeplops.dockerbox import image, stack

    if shutil.which("docker-compose") is None:
        if os.environ.get("DEEPLOPS_REQUIRE_DOCKER"):
            pytest.fail("DEEPLOPS_REQUIRE_DOCKER is set but docker-compose is missing (apt-get install docker-compose)")
        pytest.skip("docker-compose is missing")
    try:
        client = stack.connect()
    except Exception as exc:  # the suite's docker_engine fixture says how to get one
        pytest.skip(f"no Docker engine: {exc}")
    made = Project(tmp_path_factory.mktemp("compose"), image.ensure_image(client))
    try:
        made.compose("up", "-d")
        until(lambda: made.healthy("app", "files", "plain"), 60, "the project to be healthy")
        yield made
    finally:
        made.compose("down", "-v", "--timeout", "2")
        from deeplops.sidecar import deploys

        deploys.deploys_path(made.name).unlink(missing_ok=True)
        assert client.containers.list(all=True, filters={"label": f"com.docker.compose.project={made.name}"}) == []


def until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def applied(side: Running, service: str) -> list[str]:
    """The repairs the sidecar applied to ``service``, in order."""
    return [r["chose"]["repair"] for r in side.records()
            if r["event"] == "decision" and r["did"] == "applied" and r["chose"]["target"] == service]  # fmt: skip


@pytest.mark.slow
def test_a_bad_release_deployed_under_the_sidecar_is_rolled_back_and_a_good_one_is_left_alone(project, tmp_path):
    side = Running(project.name, tmp_path, "--policy", "runbook")
    try:
        attached = next(r for r in side.records() if r["event"] == "attached")
        assert attached["repairs"]["app"] == ["restart", "rollback"] and attached["repairs"]["plain"] == ["restart"]
        side.until(lambda: stable(side, 3), 60, "a healthy stack")
        good = project.container("app").id
        project.compose("up", "-d", "app", APP_RELEASE="r2")  # a good release
        side.until(lambda: project.container("app").id != good and project.healthy("app"), 30, "r2 to serve")
        side.until(lambda: stable(side, 5), 30, "the sidecar to see r2 healthy")
        assert applied(side, "app") == [] and project.env_of("app")["DEEPLOPS_RELEASE"] == "r2"
        project.compose("up", "-d", "app", APP_RELEASE="r3", APP_BROKEN="1")  # a bad one
        assert project.env_of("app")["DEEPLOPS_RELEASE_BROKEN"] == "1"
        side.until(lambda: "rollback" in applied(side, "app"), 60, "the sidecar to roll app back")
        side.until(lambda: project.healthy("app"), 30, "app healthy again")
        back = project.env_of("app")
        assert (back["DEEPLOPS_RELEASE"], back["DEEPLOPS_RELEASE_BROKEN"]) == ("r2", "0")  # the one before, not r1
        assert project.container("app").name == f"{project.name}_app_1"  # where Compose looks for it
        side.until(lambda: any(r["event"] == "outcome" and r["repair"] == "rollback" and r["healed"]
                               for r in side.records()), 30, "the rollback judged healed")  # fmt: skip
        assert applied(side, "app") == ["rollback"]
    finally:
        assert side.stop() == 0
        project.compose("up", "-d", "app")  # back to r1 for the next test


@pytest.mark.slow
def test_a_full_labelled_path_is_cleaned_and_an_unlabelled_service_is_only_restarted(project, tmp_path):
    project.container("files").exec_run(["sh", "-c", "echo precious > /data/keep.txt"])
    until(lambda: project.healthy("app", "files", "plain"), 60, "a healthy project")
    # A container of another project, wearing the same service name, that is down: never touched.
    stranger = project.client.containers.run(
        project.env["DL_IMAGE"], ["sleep", "infinity"], detach=True, name=f"dlsc-stranger-{os.getpid()}",
        labels={"com.docker.compose.project": f"{project.name}x", "com.docker.compose.service": "plain"},
    )  # fmt: skip
    stranger.stop(timeout=0)
    stranger.reload()
    down_since = stranger.attrs["State"]["FinishedAt"]
    side = Running(project.name, tmp_path, "--policy", "runbook")
    try:
        side.until(lambda: stable(side, 3), 60, "a healthy stack")
        project.container("files").exec_run(["python3", "-c", FILL, "/data/junk-1"])
        side.until(lambda: "clean_disk" in applied(side, "files"), 30, "the sidecar to clean files' disk")
        side.until(lambda: project.healthy("files"), 30, "files healthy again")
        listing = project.container("files").exec_run(["ls", "/data"]).output.decode().split()
        assert "keep.txt" in listing and not any(n.startswith("junk-") for n in listing)  # only what was declared
        project.container("plain").exec_run(["python3", "-c", FILL, "/data/junk-1"])
        side.until(lambda: len(applied(side, "plain")) >= 2, 60, "the sidecar to repair plain twice")
        assert set(applied(side, "plain")) == {"restart"}  # it declares nothing else
        assert applied(side, "files") == ["clean_disk"]
        left = project.container("plain").exec_run(["ls", "/data"]).output.decode().split()
        assert "junk-1" in left  # a restart cleans nothing
        stranger.reload()
        assert (stranger.status, stranger.attrs["State"]["FinishedAt"]) == ("exited", down_since)  # never started
    finally:
        assert side.stop() == 0
        stranger.remove(force=True)
        project.container("plain").exec_run(["sh", "-c", "rm -f /data/junk-*"])
