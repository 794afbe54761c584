"""Host-side mechanisms of the Docker backend: tmpfs volumes, the tc link cap, iptables
blocks, and the counters observations are measured from. All need root."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from deeplops.errors import SandboxError

STATE_DIR = Path(os.environ.get("DEEPLOPS_STATE_DIR", "/run/deeplops"))
"""Where each sandbox's data volumes are mounted: ``STATE_DIR/<sandbox>/<service>``."""
LINK_BYTES_PER_S = 1_000_000
"""Capacity of every service's link (8 Mbit/s): the tc cap, and the unit of the NET_RX feature."""
_IPTABLES_CHAIN = "OUTPUT"


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


def volume_dir(sandbox: str, service: str) -> Path:
    """Host directory of a service's data volume."""
    return STATE_DIR / sandbox / service


def mount_volume(path: Path, size_mb: int) -> None:
    """A fresh tmpfs of ``size_mb`` MiB at ``path``: a real, size-limited file system (ENOSPC when full)."""
    path.mkdir(parents=True, exist_ok=True)
    if path.is_mount():
        run("umount", str(path))
    run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0777", "tmpfs", str(path))


def unmount_all(root: Path) -> None:
    """Unmount every tmpfs under ``root`` and remove the directories."""
    if not root.exists():
        return
    for path in sorted(root.iterdir()):
        if path.is_mount():
            run("umount", "-l", str(path))
        if path.is_dir():
            for child in path.iterdir():
                child.unlink(missing_ok=True)
            path.rmdir()
    root.rmdir()


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
        rules = run("iptables", "-w", "5", "-S", _IPTABLES_CHAIN).splitlines()
    except SandboxError:
        return
    for rule in rules:
        if f'--comment "{tag_prefix}' in rule or f"--comment {tag_prefix}" in rule:
            args = rule.split()[2:]  # drop "-A OUTPUT"
            args = [a.strip('"') for a in args]
            # -w: Docker edits iptables too (networks come and go); wait for its lock, never skip.
            subprocess.run(["iptables", "-w", "5", "-D", _IPTABLES_CHAIN, *args], capture_output=True, timeout=10)
