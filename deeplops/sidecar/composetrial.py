"""The sidecar's incident trial on a Docker Compose project: ``deeplops bench sidecar --stack compose``.

The store example (``sandbox/compose/store/``) is brought up with docker-compose under a project of
its own, without its sidecar service: the sidecar under trial runs in this process, per policy, as
on a sandbox (``trial.watch``). Faults are set off the way they happen to a Compose project, through
Docker and docker-compose, never through deeplops' sandbox: db killed (SIGKILL), cache paused,
queue's 32 MiB disk filled with leftover temp files while its producer keeps pushing jobs, a
broken release of app deployed with ``docker-compose up``. One not recovered within the cap is
ended by hand (thawed, the files deleted, the good release brought up again), so the next starts
from a healthy stack.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import docker
import yaml
from docker.errors import NotFound
from docker.models.containers import Container

from deeplops import bounds
from deeplops.catalog import data_dir
from deeplops.dockerbox import image, stack
from deeplops.dockerbox.engine import ENGINE_ERRORS, edge
from deeplops.errors import SandboxError
from deeplops.faults import Fault, Repair
from deeplops.policies import load_policy
from deeplops.sidecar import trial
from deeplops.sidecar.deploys import COMPOSE_PROJECT, COMPOSE_SERVICE, deploys_path
from deeplops.sidecar.guards import SAFE_REPAIRS, GuardConfig

COMPOSE = "docker-compose"
"""The Compose command (1.x; the example's file is version 2.4)."""
SIDECAR_SERVICE = "sidecar"
"""The example's own sidecar service: left out, the sidecar under trial takes its place."""
INCIDENTS: tuple[tuple[Fault, str], ...] = (
    (Fault.KILL, "db"),
    (Fault.PAUSE, "cache"),
    (Fault.DISK_FULL, "queue"),
    (Fault.BAD_DEPLOY, "app"),
)
"""The faults of the trial, each on a store service it hurts."""
GUARDS = GuardConfig(allow=(*SAFE_REPAIRS, Repair.RECREATE))
"""As the example's sidecar runs (``--allow-recreate``): recreate applies only where a service
declares it (``deeplops.recreate``)."""
FILL_DIR = "/data/redis"
"""Where Redis keeps its files in queue's volume (``sandbox/launcher.py``), and its rewrites their
temp files: the example's ``deeplops.clean`` label names the ``temp-*`` there."""
FILL_LIMIT_MB = 256
"""Most MiB written before a fill gives up on reaching ENOSPC (queue's disk is 32 MiB)."""
FILL = (
    f"i=0; while [ $i -lt {FILL_LIMIT_MB} ] && head -c 1048576 /dev/zero > {FILL_DIR}/temp-deeplops-$i 2>/dev/null; "
    "do i=$((i+1)); done; "
    f'[ $i -lt {FILL_LIMIT_MB} ] || {{ echo "no ENOSPC after {FILL_LIMIT_MB} MiB"; exit 3; }}'
)
"""Fills queue's disk with 1 MiB ``temp-deeplops-N`` files until ENOSPC, in the container (sh, head)."""
GONE = 9
"""PUSH's exit status once the fill's files are gone (cleaned): the producer stops."""
PUSH = (
    f"[ -e {FILL_DIR}/temp-deeplops-0 ] || exit {GONE}; "
    "head -c 65536 /dev/zero | tr '\\0' j | redis-cli -x rpush deeplops:jobs > /dev/null"
)
"""One job of 64 KiB pushed onto the queue, with redis-cli in the container, while the fill is there."""
PUSH_EVERY_S = 0.5
"""How often the queue's producer pushes a job while its disk is full.

A Redis whose disk is full fails only once its append-only file must grow: a write into the last
page of the file still succeeds, so on its own health checks' writes alone the fault showed 50 s
after the fill, and a restart (which drops the write it failed on) hid it for as long again. A
queue's producers push all the time: with them the fault shows within a second, and a restart
does not end it; only freeing the disk does."""
UNFILL = f"rm -f {FILL_DIR}/temp-deeplops-*"
SKIPPED: tuple[type[Exception], ...] = (SandboxError, *ENGINE_ERRORS)
"""What a push meets while queue is being restarted, or paused."""
COMPOSE_TIMEOUT_S = 180.0
"""Longest docker-compose call (an ``up`` of the whole store takes seconds)."""


def store_file() -> Path:
    """The store example's docker-compose.yml (in a checkout, or shipped with the package)."""
    path = data_dir("sandbox") / "compose" / "store" / "docker-compose.yml"
    if not path.is_file():
        raise SandboxError(f"the store Compose example is missing ({path}): the installation is incomplete")
    return path


def services(path: Path) -> list[str]:
    """The example's services but its sidecar: what the trial brings up."""
    found = yaml.safe_load(path.read_text()).get("services", {})
    return [s for s in found if s != SIDECAR_SERVICE]


def release_env(service: str, release: str = "r1", broken: bool = False) -> dict[str, str]:
    """What the example's file reads a service's release from (``STORE_APP_RELEASE``, ``STORE_APP_BROKEN``)."""
    prefix = f"STORE_{service.upper()}"
    return {f"{prefix}_RELEASE": release, f"{prefix}_BROKEN": "1" if broken else "0"}


GOOD: dict[str, str] = {k: v for s in ("app", "gateway", "worker") for k, v in release_env(s).items()}
"""Every release the example reads, the good one: whatever the caller's environment says."""


def incidents(policies: list[str], cap_s: float = 30.0, log: trial.Log = print) -> list[trial.Incident]:
    """Each fault of INCIDENTS under each policy, on a fresh store Compose project per policy."""
    bounds.number(cap_s, "--cap (seconds)", 0.0, trial.MAX_CAP_S, open_low=True)
    loaded = {p: load_policy("noop" if p == trial.NONE else p, "order") for p in policies}  # bad names fail first
    path = store_file()
    if shutil.which(COMPOSE) is None:
        raise SandboxError(
            f"{COMPOSE} not found: --stack compose needs Docker Compose 1.x (e.g. apt-get install {COMPOSE})"
        )
    found: list[trial.Incident] = []
    for name, policy in loaded.items():
        with _project(path, f"dlbenchc-{os.getpid()}") as faults:
            found += trial.watch(name, policy, faults.project, INCIDENTS, cap_s, faults.inject, faults.undo, log,
                                 GUARDS)  # fmt: skip
    return found


@contextmanager
def _project(path: Path, project: str) -> Iterator[Faults]:
    """The store example up as ``project``, without its sidecar, and its faults; taken down with its
    volumes afterwards."""
    client = stack.connect()
    image.ensure_image(client)  # deeplops/service:latest, which the file runs
    _down(path, project)  # a leftover of a run killed before its own down
    faults = Faults(client, path, project)
    try:
        _compose(path, project, "up", "-d", *services(path))
        yield faults
    finally:
        faults.close()
        _down(path, project)


def _down(path: Path, project: str) -> None:
    """The project's containers, network and volumes removed, and the deploy book a sidecar kept of
    it: the next project of that name (the next policy's) is another stack, with no deploys yet."""
    _compose(path, project, "down", "-v", "--timeout", "5")
    deploys_path(project).unlink(missing_ok=True)


def _compose(path: Path, project: str, *args: str, env: Mapping[str, str] = GOOD) -> None:
    done = subprocess.run(
        [COMPOSE, "-f", str(path), "-p", project, *args],
        env={**os.environ, "COMPOSE_PROJECT_NAME": project, **env},
        capture_output=True, text=True, timeout=COMPOSE_TIMEOUT_S,
    )  # fmt: skip
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SandboxError(f"{COMPOSE} {args[0]} of project {project} failed: {bounds.shown(said, 200)}")


class Faults:
    """Setting off and ending the trial's faults on the Compose project ``project``, through Docker
    and docker-compose: ``inject`` and ``undo`` are the trial's injectors."""

    def __init__(self, client: docker.DockerClient, path: Path, project: str) -> None:
        self.client, self.path, self.project = client, path, project
        self._stop = threading.Event()
        self._producers: list[threading.Thread] = []

    @edge
    def inject(self, project: str, fault: Fault, target: str) -> None:
        """Set off ``fault`` on service ``target``."""
        container = _container(self.client, project, target)
        if fault is Fault.KILL:
            container.kill(signal="SIGKILL")
        elif fault is Fault.PAUSE:
            container.pause()
        elif fault is Fault.DISK_FULL:
            code, said = container.exec_run(["sh", "-c", FILL])
            if code != 0:
                raise SandboxError(f"disk_full on {target}: {bounds.shown(said.decode(errors='replace').strip(), 200)}")
            producer = threading.Thread(target=self._produce, args=(project, target), daemon=True)
            self._producers.append(producer)
            producer.start()
        elif fault is Fault.BAD_DEPLOY:  # a deploy of a broken release, as its team would ship one
            _compose(self.path, project, "up", "-d", "--no-deps", target,
                     env=GOOD | release_env(target, "r2", broken=True))  # fmt: skip
        else:
            raise SandboxError(f"{fault.label} is not set off on a Compose project by this trial")

    @edge
    def undo(self, project: str, fault: Fault, target: str) -> None:
        """End any fault of the trial by hand: thaw what is paused, bring every service up on its
        good release (a killed one started, a broken deploy replaced), delete the fill's files
        (which stops its producer)."""
        for container in _containers(self.client, project):
            if container.status == "paused":
                container.unpause()
        _compose(self.path, project, "up", "-d", *services(self.path))
        if fault is Fault.DISK_FULL:
            _container(self.client, project, target).exec_run(["sh", "-c", UNFILL])

    def _produce(self, project: str, target: str) -> None:
        """The queue's producer: a job every PUSH_EVERY_S until the fill's files are gone, the
        container is, or the trial ends; a push while the container restarts is skipped."""
        while not self._stop.is_set():
            try:
                code, _ = _container(self.client, project, target).exec_run(["sh", "-c", PUSH])
                if code == GONE:
                    return
            except NotFound:
                return
            except SKIPPED:  # not running now (being restarted): the next push
                pass
            self._stop.wait(PUSH_EVERY_S)

    def close(self) -> None:
        """Stop the producers."""
        self._stop.set()
        for producer in self._producers:
            producer.join()


def _containers(client: docker.DockerClient, project: str) -> list[Container]:
    return list(client.containers.list(all=True, filters={"label": f"{COMPOSE_PROJECT}={project}"}))


def _container(client: docker.DockerClient, project: str, service: str) -> Container:
    for container in _containers(client, project):
        if container.labels.get(COMPOSE_SERVICE) == service:
            return container
    raise SandboxError(f"no container of service {service!r} in Compose project {project}")
