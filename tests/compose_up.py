"""A Compose example brought up for a docker test, and taken down whatever happens."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def compose_up(file: Path, project: str) -> Iterator[tuple[int, Callable[..., str]]]:
    """``file`` up under ``project``, its sidecar's image built and a free port for its metrics:
    (port, a docker-compose runner). Taken down with its volumes and its sidecar's deploy book,
    and checked to leave no container or volume behind."""
    from deeplops.dockerbox import image, stack
    from deeplops.sidecar.deploys import deploys_path

    if shutil.which("docker-compose") is None:
        if os.environ.get("DEEPLOPS_REQUIRE_DOCKER"):
            pytest.fail("DEEPLOPS_REQUIRE_DOCKER is set but docker-compose is missing (apt-get install docker-compose)")
        pytest.skip("docker-compose is missing")
    client = stack.connect()
    image.ensure_image(client)
    image.ensure_sidecar_image(client)  # .ci/run builds it first: ~2.5 min when missing
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "COMPOSE_PROJECT_NAME": project, "DEEPLOPS_METRICS_PORT": str(port)}

    def compose(*args: str) -> str:
        done = subprocess.run(["docker-compose", "-f", str(file), "-p", project, *args],
                              env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    try:
        compose("up", "-d")
        yield port, compose
    finally:
        compose("down", "-v", "--timeout", "5")
        deploys_path(project).unlink(missing_ok=True)  # the deploy book its sidecar kept, in the host's /run/deeplops
        label = {"label": f"com.docker.compose.project={project}"}
        assert client.containers.list(all=True, ignore_removed=True, filters=label) == []
        assert client.volumes.list(filters=label) == []
