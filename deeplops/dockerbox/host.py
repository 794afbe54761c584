"""Host-side mechanisms of the Docker backend: tmpfs volumes, the tc link cap, iptables
blocks, and the counters observations are measured from. All need root.

Everything here runs as root, so nothing trusts a name or a path: a sandbox name is checked
(``check_name``) before it becomes a path, removal stays inside STATE_DIR, and every file
operation inside a volume (which the container can write: it is mode 0777) goes through a
directory descriptor and never follows a symbolic link.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deeplops import bounds
from deeplops.errors import SandboxError

STATE_DIR = Path(os.environ.get("DEEPLOPS_STATE_DIR", "/run/deeplops"))
"""Where each sandbox's data volumes are mounted: ``STATE_DIR/<sandbox>/<service>``."""
LINK_BYTES_PER_S = 1_000_000
"""Capacity of every service's link (8 Mbit/s): the tc cap, and the unit of the NET_RX feature."""
_IPTABLES_CHAIN = "OUTPUT"
MAX_NAME_LEN = 31
"""Longest sandbox name: with a service name (at most 31) ``NAME-SERVICE`` fits a 63-character DNS
label, and the iptables comment ``deeplops:NAME:SERVICE`` stays far below its 255."""
_NAME = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{MAX_NAME_LEN - 1}}}")
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def check_name(name: object, what: str = "sandbox name") -> str:
    """``name`` if it may name a sandbox, else a SandboxError; call it before a name is used.

    A sandbox name becomes a directory under STATE_DIR, a network, the prefix of container names
    and part of iptables comments: lower-case letters, digits, ``-`` and ``_``, starting with a
    letter or digit, 1 to MAX_NAME_LEN characters. No ``/``, ``.`` or empty name gets through.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SandboxError(
            f"{what} {bounds.shown(name)} is invalid: expected 1 to {MAX_NAME_LEN} lower-case letters, digits, "
            "'-' or '_', starting with a letter or digit"
        )
    return name


def require_root() -> None:
    """Fail clearly when not root: volumes, tc and iptables need it."""
    if os.geteuid() != 0:
        raise SandboxError("the docker backend needs root (tmpfs volumes, tc and iptables): run it as root")


def run(*cmd: str) -> str:
    """Run a host command; a failure becomes a SandboxError naming it."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise SandboxError(f"{cmd[0]} not found: the docker backend needs it on the host") from None
    if done.returncode != 0:
        raise SandboxError(f"{' '.join(cmd)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def sandbox_dir(sandbox: str) -> Path:
    """Host directory holding a sandbox's data volumes."""
    return STATE_DIR / check_name(sandbox)


def volume_dir(sandbox: str, service: str) -> Path:
    """Host directory of a service's data volume."""
    return sandbox_dir(sandbox) / check_name(service, "service name")


def mount_volume(path: Path, size_mb: int) -> None:
    """A fresh tmpfs of ``size_mb`` MiB at ``path``: a real, size-limited file system (ENOSPC when full)."""
    path.mkdir(parents=True, exist_ok=True)
    if not stat.S_ISDIR(os.lstat(path).st_mode):  # mount would follow a link to wherever it points
        raise SandboxError(f"{path} is not a directory: expected a sandbox volume's mount point")
    if path.is_mount():
        run("umount", str(path))
    run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0777", "tmpfs", str(path))


@contextmanager
def open_volume(path: Path) -> Iterator[int]:
    """A descriptor of the volume directory at ``path``, for the ``*_at`` operations below.

    The parents (STATE_DIR/NAME) belong to root; the volume's own contents belong to whatever
    runs in the container, so every name in it is resolved relative to this descriptor.
    """
    try:
        fd = os.open(path, _OPEN_DIR)
    except OSError as exc:
        raise SandboxError(f"cannot open the volume {path}: {exc.strerror}") from None
    try:
        yield fd
    finally:
        os.close(fd)


def create_in(dir_fd: int, name: str) -> int | None:
    """A new, empty file ``name`` in the directory ``dir_fd``, open for writing; None when the name
    is held by something that cannot be removed without following it (a directory).

    Whatever held the name before (a file, or a link planted to point anywhere on the host) is
    unlinked, which never follows a link; the file is then created exclusively and never through
    a link, so a link planted in between makes this fail instead of writing through it.
    """
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        return None
    try:
        return os.open(name, _CREATE, 0o644, dir_fd=dir_fd)
    except FileExistsError:  # planted again since the unlink: leave it
        return None


def write_new(path: Path, name: str, content: bytes) -> None:
    """Write ``content`` as a new file ``name`` in the volume at ``path`` (see :func:`create_in`).

    Raises:
        SandboxError: the name is held by a directory.
    """
    with open_volume(path) as volume:
        fd = create_in(volume, name)
        if fd is None:
            raise SandboxError(f"cannot create {path / name}: the name is taken by a directory")
        with open(fd, "wb") as f:
            f.write(content)


def remove_in(dir_fd: int, name: str) -> bool:
    """Unlink ``name`` in the directory ``dir_fd`` (a link itself, never its target); whether it went."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except (FileNotFoundError, IsADirectoryError):
        return False
    return True


def unmount_all(root: Path) -> None:
    """Unmount the volumes of the sandbox directory ``root`` and remove it.

    ``root`` must be a sandbox's own directory, directly in STATE_DIR; anything else is refused.
    Nothing is followed: a link in its place is removed as a link, and the removal walks by
    descriptors (``shutil.rmtree`` on Linux), so a link inside never leads outside.
    """
    _check_own(root)
    try:
        mode = os.lstat(root).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        root.unlink(missing_ok=True)
        return
    unmount_under(root)  # the volumes, and anything else mounted inside: detached, never emptied
    shutil.rmtree(root, onerror=_gone_is_fine)


def _check_own(root: Path) -> None:
    """Refuse any path that is not a sandbox directory directly in STATE_DIR."""
    if not shutil.rmtree.avoids_symlink_attacks:
        raise SandboxError("this platform's rmtree can follow links: refusing to remove sandbox volumes")
    if not _NAME.fullmatch(root.name) or root.parent.resolve() != STATE_DIR.resolve():
        raise SandboxError(f"refusing to remove {root}: expected a sandbox directory directly in {STATE_DIR}")


def _gone_is_fine(func: object, path: str, exc_info: tuple[type[BaseException], BaseException, object]) -> None:
    """rmtree's error handler: a file already gone is fine (the reaper may be removing it too)."""
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def mounts_under(path: Path) -> list[Path]:
    """Every mount point at or below ``path``, deepest first."""
    top = os.path.realpath(path)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = _unescape(line.split()[4])
        if point == top or point.startswith(top.rstrip("/") + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_under(path: Path) -> None:
    """Detach every mount at or below ``path`` (deepest first), so that removing ``path`` cannot
    reach into another file system: a bind mount of a host folder would otherwise be emptied."""
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=10)
    left = mounts_under(path)
    if left:
        raise SandboxError(f"cannot unmount {left[0]}: refusing to remove {path} while it is mounted")


@contextmanager
def unmounted_after(path: Path) -> Iterator[Path]:
    """``path``; on the way out, however it is left, every mount under it detached (``unmount_under``).

    For a root file system being built: debootstrap mounts /proc and /sys and binds /dev's entries
    into it, and unmounts them only if it exits by itself, so removing the folder after an
    interruption would reach into the host's /dev/shm.
    """
    try:
        yield path
    finally:
        unmount_under(path)


def _unescape(field: str) -> str:
    """A mountinfo path field: spaces, tabs, newlines and backslashes come octal-escaped."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def disk_usage(path: Path) -> float:
    """Fraction of the file system at ``path`` in use."""
    st = os.statvfs(path)
    return 1.0 - st.f_bavail / st.f_blocks if st.f_blocks else 0.0


def veth_of(pid: int) -> str:
    """Host-side name of the veth whose peer is eth0 in the network namespace of process ``pid``."""
    try:
        index = (Path(f"/proc/{pid}/root/sys/class/net/eth0/iflink")).read_text().strip()
    except OSError:
        index = run("nsenter", "-t", str(pid), "-n", "cat", "/sys/class/net/eth0/iflink").strip()
    for dev in Path("/sys/class/net").iterdir():
        try:
            if (dev / "ifindex").read_text().strip() == index:
                return dev.name
        except OSError:
            continue
    raise SandboxError(f"no host veth with ifindex {index} for process {pid}")


def cap_link(veth: str) -> None:
    """Cap traffic into a container at LINK_BYTES_PER_S with tbf; a deep queue so a flood adds seconds."""
    rate = f"{LINK_BYTES_PER_S * 8 // 1000}kbit"
    run("tc", "qdisc", "replace", "dev", veth, "root", "tbf", "rate", rate, "burst", "32kbit", "latency", "1s")


def link_capped(veth: str) -> bool:
    """Whether the tbf cap is in place on ``veth``."""
    return "tbf" in run("tc", "qdisc", "show", "dev", veth)


def tx_bytes(veth: str) -> int | None:
    """Bytes the host sent into the container through ``veth`` (its receive counter), or None if gone."""
    try:
        return int(Path(f"/sys/class/net/{veth}/statistics/tx_bytes").read_text())
    except (OSError, ValueError):
        return None


def cpu_ns(container_id: str) -> int | None:
    """CPU time used by a container's cgroup, in ns (cgroup v1 or v2), or None if unknown."""
    for path in (
        Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage"),
        Path(f"/sys/fs/cgroup/cpu,cpuacct/docker/{container_id}/cpuacct.usage"),
    ):
        try:
            return int(path.read_text())
        except (OSError, ValueError):
            continue
    for path in (
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat"),
        Path(f"/sys/fs/cgroup/docker/{container_id}/cpu.stat"),
    ):
        try:
            for line in path.read_text().splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) * 1000
        except (OSError, ValueError):
            continue
    return None


MEMORY_STAT_FILES = (
    "/sys/fs/cgroup/memory/docker/{id}/memory.stat",
    "/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.stat",
    "/sys/fs/cgroup/docker/{id}/memory.stat",
)
"""Where a container's memory counters are (cgroup v1, then v2)."""


def memory_bytes(container_id: str) -> int | None:
    """Resident anonymous memory of a container's processes (cgroup v1 or v2), or None if unknown.
    Its tmpfs volume's files are page cache (shmem), not counted: they are its data, not its
    processes' memory."""
    for template in MEMORY_STAT_FILES:
        try:
            text = Path(template.format(id=container_id)).read_text()
        except OSError:
            continue
        return anon_bytes(text)
    return None


def anon_bytes(memory_stat: str) -> int | None:
    """The resident anonymous memory a ``memory.stat`` holds: v1's ``total_rss`` (the cgroup and its
    children), v2's ``anon``; None when it holds neither."""
    fields = dict(line.split(maxsplit=1) for line in memory_stat.splitlines() if len(line.split()) == 2)
    for key in ("total_rss", "anon"):
        try:
            return int(fields[key])
        except (KeyError, ValueError):
            continue
    return None


CPU_CAP_FILES = (
    ("/sys/fs/cgroup/cpu/docker/{id}/cpu.cfs_quota_us", "-1"),
    ("/sys/fs/cgroup/cpu,cpuacct/docker/{id}/cpu.cfs_quota_us", "-1"),
    ("/sys/fs/cgroup/system.slice/docker-{id}.scope/cpu.max", "max"),
    ("/sys/fs/cgroup/docker/{id}/cpu.max", "max"),
)
"""Where a container's CPU cap is (cgroup v1, v2), and what a file holds when there is none."""


def lift_cpu_cap(container_id: str) -> tuple[Path, str] | None:
    """Lift a container's CPU cap; return its file and the cap it held, to put back with
    ``set_cpu_cap``, or None where its cgroup is not visible here (inside a container)."""
    for template, uncapped in CPU_CAP_FILES:
        path = Path(template.format(id=container_id))
        try:
            held = path.read_text().strip()
            path.write_text(uncapped)
        except OSError:
            continue
        return path, held
    return None


def set_cpu_cap(path: Path, cap: str) -> None:
    """Put a cap back (``lift_cpu_cap``); a container gone since has nothing to put back."""
    with contextlib.suppress(OSError):
        path.write_text(cap)


def cgroup_processes(container_id: str) -> int | None:
    """Number of processes in a container's cgroup, or None if unknown."""
    for path in (
        Path(f"/sys/fs/cgroup/pids/docker/{container_id}/cgroup.procs"),
        Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cgroup.procs"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cgroup.procs"),
    ):
        try:
            return len(path.read_text().split())
        except OSError:
            continue
    return None


def block(ip: str, tag: str) -> None:
    """Drop UDP sent from this host to ``ip`` before it reaches the link: the rate_limit repair."""
    rule = ("-d", ip, "-p", "udp", "-m", "comment", "--comment", tag, "-j", "DROP")
    run("iptables", "-w", "5", "-I", _IPTABLES_CHAIN, *rule)


def unblock(tag_prefix: str) -> None:
    """Remove every block whose comment starts with ``tag_prefix``."""
    try:
        listing = run("iptables", "-w", "5", "-S", _IPTABLES_CHAIN)
    except SandboxError:
        return
    for args in tagged_rules(listing, tag_prefix):
        # -w: Docker edits iptables too (networks come and go); wait for its lock, never skip.
        subprocess.run(["iptables", "-w", "5", "-D", _IPTABLES_CHAIN, *args], capture_output=True, timeout=10)


def tagged_rules(listing: str, tag_prefix: str) -> list[list[str]]:
    """The rules of an ``iptables -S CHAIN`` listing whose comment starts with ``tag_prefix``, each as
    the arguments that delete it after ``-D CHAIN`` (its ``-A CHAIN`` dropped, quotes taken off)."""
    found = []
    for rule in listing.splitlines():
        if f'--comment "{tag_prefix}' in rule or f"--comment {tag_prefix}" in rule:
            found.append([a.strip('"') for a in rule.split()[2:]])
    return found
