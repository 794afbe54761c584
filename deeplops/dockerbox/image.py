"""The images, built with no registry: the service image (a debootstrapped Debian root file
system with python3, imported as the base, plus ``sandbox/service.py``) and the sidecar's (the
same base plus deeplops installed with ``pip install --target``, ``sandbox/sidecar/Dockerfile``).
Each is tagged with a digest of its inputs, rebuilt only when they change, and also tagged
``latest`` for Compose files to name. Engine errors leave as EngineError (``engine.edge``).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import docker
from docker.errors import APIError, BuildError, ImageNotFound

from deeplops.catalog import data_dir
from deeplops.dockerbox import host
from deeplops.dockerbox.engine import ENGINE_ERRORS, edge, translate
from deeplops.errors import SandboxError

BASE_IMAGE = "deeplops/base:bookworm"
"""The imported root file system every service image starts from."""
SERVICE_REPO = "deeplops/service"
SIDECAR_REPO = "deeplops/sidecar"
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


@edge
def ensure_image(
    client: docker.DockerClient, base: str = BASE_IMAGE, log: Callable[[str], None] = print, force: bool = False
) -> str:
    """The service image's tag, building the base and the image first if they are missing."""
    tag = service_tag(base)
    if not force and _exists(client, tag):
        client.images.get(tag).tag(SERVICE_REPO, "latest")
        return tag
    _ensure_base(client, base, log, force)
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
    client.images.get(tag).tag(SERVICE_REPO, "latest")
    return tag


def source_root() -> Path:
    """The deeplops checkout this package runs from (the sidecar image installs it)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "sandbox" / "sidecar" / "Dockerfile").is_file():
        raise SandboxError(f"building the sidecar image needs a deeplops source checkout; {root} is not one")
    return root


def sidecar_tag(base: str = BASE_IMAGE) -> str:
    """Tag of the sidecar image: a digest of the checkout's sources, the base and this Python."""
    root = source_root()
    digest = hashlib.sha256(f"{base} {sys.version_info[:2]}".encode())
    files = [root / "pyproject.toml"]
    for folder in ("deeplops", "envs", "scenarios", "agents", "sandbox"):
        files += [p for p in (root / folder).rglob("*") if p.is_file() and not _generated(p.relative_to(root))]
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return f"{SIDECAR_REPO}:{digest.hexdigest()[:12]}"


def _generated(rel: Path) -> bool:
    return "__pycache__" in rel.parts or rel.suffix == ".pyc"


@edge
def ensure_sidecar_image(
    client: docker.DockerClient, base: str = BASE_IMAGE, log: Callable[[str], None] = print, force: bool = False
) -> str:
    """The sidecar image's tag, building it first if missing: this checkout installed with
    ``pip install --target`` by this Python, whose minor version must be the base image's."""
    tag = sidecar_tag(base)
    if not force and _exists(client, tag):
        client.images.get(tag).tag(SIDECAR_REPO, "latest")
        return tag
    if base == BASE_IMAGE and sys.version_info[:2] != (3, 11):
        raise SandboxError(f"the sidecar image's base {BASE_IMAGE} has Python 3.11, so its packages must be "
                           f"installed by Python 3.11; this is {sys.version.split()[0]}")  # fmt: skip
    _ensure_base(client, base, log, False)
    root = source_root()
    with tempfile.TemporaryDirectory(prefix="deeplops-sidecar-") as tmp:
        context = Path(tmp)
        shutil.copy(root / "sandbox" / "sidecar" / "Dockerfile", context / "Dockerfile")
        log(f"installing deeplops and its dependencies for {tag} (about a minute)")
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-warn-script-location", "--target", str(context / "site"), str(root)],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")] or ["no output"]
            raise SandboxError(f"pip install for the sidecar image failed: {errors[-1]}")
        log(f"building {tag} from {base}")
        try:
            client.images.build(path=str(context), tag=tag, rm=True, pull=False, buildargs={"BASE": base},
                                labels={"deeplops.image": "sidecar"})  # fmt: skip
        except BuildError as exc:
            raise SandboxError(f"building {tag} failed: {exc.msg}") from None
    client.images.get(tag).tag(SIDECAR_REPO, "latest")
    _drop_older(client, SIDECAR_REPO, tag, log)
    return tag


def _drop_older(client: docker.DockerClient, repo: str, keep: str, log: Callable[[str], None]) -> None:
    """Remove the repo's other builds (1.5 GB each for the sidecar); one a container uses stays.

    Tidying only: the new image is built, so an engine slow to delete an old one (the client times
    out after a minute) leaves it in place for the next build, and says so.
    """
    for old in client.images.list(name=repo):
        if keep in old.tags:
            continue
        for ref in old.tags:
            try:
                client.images.remove(ref)
                log(f"removed the older {ref}")
            except APIError:
                pass  # in use by a container: kept
            except ENGINE_ERRORS as exc:
                log(f"left the older {ref} in place: {translate(exc)}")


def _ensure_base(client: docker.DockerClient, base: str, log: Callable[[str], None], force: bool) -> None:
    if base == BASE_IMAGE and (force or not _exists(client, BASE_IMAGE)):
        build_base(client, log)
    elif not _exists(client, base):
        raise SandboxError(f"base image {base!r} is not present: pull it first, or use the default debootstrap base")


@edge
def build_base(client: docker.DockerClient, log: Callable[[str], None] = print) -> None:
    """Debootstrap a minimal Debian with python3 and import it as BASE_IMAGE (needs root and debootstrap)."""
    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap not found: install it (apt-get install debootstrap) to build the base image")
    # Exits in reverse: the mounts an interrupted debootstrap left are detached before the folder goes.
    with tempfile.TemporaryDirectory(prefix="deeplops-rootfs-") as tmp, host.unmounted_after(Path(tmp)):
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
