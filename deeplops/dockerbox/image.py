"""The service image, built with no registry: a debootstrapped Debian root file system with
python3, imported as the base, plus ``sandbox/service.py``. Rebuilt only when its inputs change.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
from docker.errors import BuildError, ImageNotFound

from deeplops.catalog import data_dir
from deeplops.errors import SandboxError

BASE_IMAGE = "deeplops/base:bookworm"
"""The imported root file system every service image starts from."""
SERVICE_REPO = "deeplops/service"
MIRROR = os.environ.get("DEEPLOPS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
_DOCKERFILE = """FROM {base}
COPY service.py /app/service.py
STOPSIGNAL SIGTERM
CMD ["python3", "-u", "/app/service.py"]
"""
# Paths of the root file system a service never needs; dropped to halve the image.
_TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt", "var/lib/apt/lists")


def service_source() -> Path:
    """The service program copied into the image."""
    return data_dir("sandbox") / "service.py"


def service_tag(base: str = BASE_IMAGE) -> str:
    """Tag of the service image: a digest of everything it is built from."""
    digest = hashlib.sha256(service_source().read_bytes() + _DOCKERFILE.format(base=base).encode()).hexdigest()
    return f"{SERVICE_REPO}:{digest[:12]}"


def ensure_image(
    client: docker.DockerClient, base: str = BASE_IMAGE, log: Callable[[str], None] = print, force: bool = False
) -> str:
    """The service image's tag, building the base and the image first if they are missing."""
    tag = service_tag(base)
    if not force and _exists(client, tag):
        return tag
    if base == BASE_IMAGE and (force or not _exists(client, BASE_IMAGE)):
        build_base(client, log)
    elif not _exists(client, base):
        raise SandboxError(f"base image {base!r} is not present: pull it first, or use the default debootstrap base")
    log(f"building {tag} from {base}")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        _add(tar, "Dockerfile", _DOCKERFILE.format(base=base).encode())
        _add(tar, "service.py", service_source().read_bytes())
    context.seek(0)
    try:
        client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, pull=False,
                            labels={"deeplops.image": "service"})  # fmt: skip
    except BuildError as exc:
        raise SandboxError(f"building {tag} failed: {exc.msg}") from None
    return tag


def build_base(client: docker.DockerClient, log: Callable[[str], None] = print) -> None:
    """Debootstrap a minimal Debian with python3 and import it as BASE_IMAGE (needs root and debootstrap)."""
    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap not found: install it (apt-get install debootstrap) to build the base image")
    with tempfile.TemporaryDirectory(prefix="deeplops-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        log(f"debootstrapping a minimal Debian with python3 from {MIRROR} (about a minute)")
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3", "bookworm", str(root), MIRROR],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SandboxError(f"debootstrap failed: {tail[0]}")
        for rel in _TRIM:
            shutil.rmtree(root / rel, ignore_errors=True)
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".")
        log(f"importing {BASE_IMAGE}")
        repo, _, tag = BASE_IMAGE.partition(":")
        client.api.import_image_from_file(str(archive), repository=repo, tag=tag)


def _exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
    except ImageNotFound:
        return False
    return True


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
