"""The images, built with no registry: the service image (a debootstrapped Debian root file
system with python3 and every kind's real software, imported as the base, plus the programs of
``sandbox/`` and a PostgreSQL cluster made at build time) and the sidecar's (the same base plus
deeplops installed with ``pip install --target``, ``sandbox/sidecar/Dockerfile``). Each is tagged
with a digest of its inputs, rebuilt only when they change, and also tagged ``latest`` for
Compose files to name. Engine errors leave as EngineError (``engine.edge``).
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

SUITE = "bookworm"
PACKAGES = ("python3", "postgresql-15", "redis-server", "nginx-light", "python3-psycopg2", "python3-redis")
"""What the base holds besides Debian's minimal system: every kind's real program (docs/design.md §4.1)."""
# Paths of the root file system no service needs; dropped to halve the image. PostgreSQL's JIT
# (llvmjit and the LLVM and Z3 it loads, 130 MB) is switched off in the cluster template, and
# the cluster Debian's postinst made is replaced by that template.
_TRIM = (
    "usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/i18n", "var/cache/apt",
    "var/lib/apt/lists", "usr/lib/postgresql/15/lib/bitcode", "usr/lib/postgresql/15/lib/llvmjit.so",
    "usr/lib/postgresql/15/lib/llvmjit_types.bc", "usr/lib/x86_64-linux-gnu/libLLVM-14.so",
    "usr/lib/x86_64-linux-gnu/libLLVM-14.so.1", "usr/lib/x86_64-linux-gnu/libz3.so.4", "var/lib/postgresql/15",
    "etc/postgresql/15",
)  # fmt: skip
BASE_IMAGE = "deeplops/base:{}-{}".format(
    SUITE, hashlib.sha256(" ".join((SUITE, *PACKAGES, "trim", *_TRIM)).encode()).hexdigest()[:12]
)
"""The imported root file system every image starts from, tagged by a digest of what it holds, so
a base of an older package list on this engine is never taken for it."""
SERVICE_REPO = "deeplops/service"
SIDECAR_REPO = "deeplops/sidecar"
MIRROR = os.environ.get("DEEPLOPS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PROGRAMS = ("service.py", "clients.py", "app.py", "worker.py", "launcher.py", "schema.sql")
"""What the service image carries from ``sandbox/``: each kind's program, and what they share."""
PG_TEMPLATE = "/opt/deeplops/pgtemplate"
"""The PostgreSQL cluster made at build time; a postgres service copies it into its volume at start."""
PG_BIN = "/usr/lib/postgresql/15/bin"
# The cluster template is its own layer, before the programs: a change to a program rebuilds only
# the last layer. initdb runs here, once, not in every container under a quarter of a CPU; the
# tables every kind writes are made here too (schema.sql), in single-user mode. Small settings:
# 1 MiB WAL segments, 16 MB of shared buffers, 30 connections, 3 of them kept for the superuser (the
# launcher's checks; the clients connect as an ordinary role), as PostgreSQL's default; fsync stays on.
_DOCKERFILE = """FROM {base}
COPY schema.sql /app/schema.sql
RUN set -e; install -d -o postgres -g postgres {template}; \\
    setpriv --reuid=postgres --regid=postgres --init-groups {bin}/initdb -D {template} --wal-segsize=1 \\
        -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-instructions >/dev/null; \\
    printf '%s\\n' "listen_addresses = '*'" "port = 5432" "max_connections = 30" "superuser_reserved_connections = 3" \\
        "shared_buffers = 16MB" \\
        "min_wal_size = 4MB" "max_wal_size = 16MB" "jit = off" "unix_socket_directories = '/tmp'" \\
        >> {template}/postgresql.conf; \\
    echo "host all all all trust" >> {template}/pg_hba.conf; \\
    setpriv --reuid=postgres --regid=postgres --init-groups {bin}/postgres --single -D {template} postgres \\
        < /app/schema.sql >/dev/null
COPY {programs} /app/
STOPSIGNAL SIGTERM
CMD ["python3", "-u", "/app/service.py"]
"""


def dockerfile(base: str = BASE_IMAGE) -> str:
    """The service image's recipe on ``base``."""
    return _DOCKERFILE.format(base=base, template=PG_TEMPLATE, bin=PG_BIN, programs=" ".join(PROGRAMS))


def service_tag(base: str = BASE_IMAGE) -> str:
    """Tag of the service image: a digest of everything it is built from."""
    digest = hashlib.sha256(dockerfile(base).encode())
    for name in PROGRAMS:
        digest.update(name.encode() + b"\0" + (data_dir("sandbox") / name).read_bytes())
    return f"{SERVICE_REPO}:{digest.hexdigest()[:12]}"


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
        _add(tar, "Dockerfile", dockerfile(base).encode())
        for name in PROGRAMS:
            _add(tar, name, (data_dir("sandbox") / name).read_bytes())
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
    """Debootstrap a minimal Debian with PACKAGES and import it as BASE_IMAGE (needs root and debootstrap)."""
    if shutil.which("debootstrap") is None:
        raise SandboxError("debootstrap not found: install it (apt-get install debootstrap) to build the base image")
    # Exits in reverse: the mounts an interrupted debootstrap left are detached before the folder goes.
    with tempfile.TemporaryDirectory(prefix="deeplops-rootfs-") as tmp, host.unmounted_after(Path(tmp)):
        root = Path(tmp) / "rootfs"
        log(f"debootstrapping a minimal Debian {SUITE} with python3, PostgreSQL, Redis and nginx from {MIRROR} "
            "(2 to 5 minutes)")  # fmt: skip
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), MIRROR],
            capture_output=True, text=True,
        )  # fmt: skip
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SandboxError(f"debootstrap failed: {tail[0]}")
        for rel in _TRIM:
            path = root / rel
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        archive = Path(tmp) / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(root, arcname=".")
        log(f"importing {BASE_IMAGE} ({archive.stat().st_size / 2**20:.0f} MB)")
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
