"""The repairs a Compose service declares by its labels (``deeplops.sidecar.labels``), on its container.

``replace`` swaps a container for one made from a creation spec (``creation_spec``), as
``docker-compose up`` recreates a changed service, and puts the old one back if the new one
cannot start: a rollback to an earlier deploy's spec. ``recreate`` starts it anew on fresh, empty
volumes of the project's own. ``clean`` deletes what the declared paths name inside the
container and ``disk_used`` reads how full their file systems are, both through ``docker exec``
(``sh``, ``find``, ``df`` in the image): the sidecar may run in a container holding only the
Docker socket, where the container's files are not at hand.

Each raises SandboxError, one line saying what was expected and what was found, when it refuses
or fails; the engine's own failures leave as its EngineError (``deeplops.dockerbox.engine``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import re
import shlex
from typing import Any

import docker
from docker.errors import APIError, ImageNotFound, NotFound
from docker.models.containers import Container

from deeplops.dockerbox import host, mechanisms, stack
from deeplops.dockerbox.engine import ENGINE_ERRORS, edge, translate
from deeplops.errors import SandboxError
from deeplops.sidecar.deploys import COMPOSE_PROJECT

NAME = "Name"
"""A creation spec's key for the container's name: not part of the engine's create body."""
OTHER_NETWORKS = "OtherNetworks"
"""A creation spec's key for the networks besides the first, each with its endpoint settings:
connected after create (the engine's create takes one network before API 1.44)."""
ASIDE = "-deeplops-old-"
"""An old container is renamed NAME + ASIDE + its short ID while its replacement starts."""
STOP_WAIT_S = 2.0
"""How long a stopped container's exit may take to be recorded by the engine (as a restart waits)."""
GLOB = "*?["
"""Characters that make a declared path's last component a pattern (fnmatch's, as find -name's)."""
_FAILURES: tuple[type[Exception], ...] = (SandboxError, *ENGINE_ERRORS)
"""What a step of a replace may fail with, the old container then put back."""
_CANNOT_EXEC = (126, 127)
"""Exit statuses of an exec whose program is missing or cannot run."""
_MOVED = 3
"""Exit status of the delete script when a directory is no longer reached without a symlink."""
_DF_LINE = re.compile(r"\s(\d+)\s+(\d+)\s+(\d+)\s+\d+%\s")
"""A ``df -P`` line's sizes: total, used and available blocks (the device and mount point may hold spaces)."""


@edge
def creation_spec(container: Container) -> dict[str, Any]:
    """What creating ``container`` again takes, from its inspect (``container.attrs``, not reloaded).

    The engine's create body: every Config field (the Hostname left out when it is the
    container's own short ID, so the new one gets its own), ``Image`` the image ID it runs (not
    the tag, which may have moved), its HostConfig, and a NetworkingConfig for its first network
    (aliases less its own short ID); besides, ``NAME`` and ``OTHER_NETWORKS``. A copy of its own,
    JSON-serialisable: it is persisted.
    """
    attrs = container.attrs
    short = container.id[:12]
    config = {k: v for k, v in attrs["Config"].items() if not (k == "Hostname" and v == short)}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    first = _first_network(attrs["HostConfig"].get("NetworkMode") or "", networks)
    endpoints = {net: _endpoint(settings, short) for net, settings in networks.items()} if first else {}
    first_endpoint = {first: endpoints.pop(first)} if first else {}
    spec = {**config, "Image": attrs["Image"], "HostConfig": attrs["HostConfig"],
            "NetworkingConfig": {"EndpointsConfig": first_endpoint},
            NAME: attrs["Name"].lstrip("/"), OTHER_NETWORKS: endpoints}  # fmt: skip
    return dict(json.loads(json.dumps(spec)))


def _first_network(mode: str, networks: dict[str, Any]) -> str | None:
    """The network the container was created on (its NetworkMode), or None where it shares another's
    stack ("container:ID") or none is found."""
    name = "bridge" if mode == "default" else mode
    if name in networks:
        return name
    by_id = [net for net, settings in networks.items() if mode and (settings.get("NetworkID") or "").startswith(mode)]
    return by_id[0] if by_id else None


def _endpoint(settings: dict[str, Any], short: str) -> dict[str, Any]:
    """A network endpoint's settings to create with: the container's own short-ID alias left out
    (the engine gives the new one its own)."""
    aliases = [a for a in settings.get("Aliases") or [] if a != short]
    kept = {"Aliases": aliases, "IPAMConfig": settings.get("IPAMConfig"), "Links": settings.get("Links"),
            "DriverOpts": settings.get("DriverOpts")}  # fmt: skip
    return {k: v for k, v in kept.items() if v}


@edge
def replace(client: docker.DockerClient, old: Container | None, spec: dict[str, Any], what: str) -> Container:
    """Replace ``old`` by a container made from ``spec``, as ``docker-compose up`` recreates a service.

    The old one is stopped as a restart stops it (``mechanisms._stop``; its restart policy held
    off, so the engine does not start it again), renamed aside, and the new one created under its
    name, with the old one's anonymous volumes, connected to its other networks and started; the
    old one is removed then. If the new one cannot be made or started, it is removed and the old
    one renamed back and started again, and a SandboxError says why. ``old`` None: just create and
    start ``spec[NAME]``. Returns the new container.
    """
    _check_image(client, str(spec["Image"]), what)
    body = {k: copy.deepcopy(v) for k, v in spec.items() if k not in (NAME, OTHER_NETWORKS)}
    if old is None:
        try:
            return _start_new(client, body, str(spec[NAME]), spec[OTHER_NETWORKS])
        except ENGINE_ERRORS as exc:
            raise SandboxError(f"{what}: {_why(exc)}") from None
    old.reload()
    name, policy = old.name, old.attrs["HostConfig"].get("RestartPolicy") or {}
    _keep_anonymous_volumes(body, old)
    try:
        _set_aside(old, f"{name}{ASIDE}{old.id[:12]}", what)
        new = _start_new(client, body, name, spec[OTHER_NETWORKS])
    except _FAILURES as exc:
        raise SandboxError(f"{what}: {_why(exc)}; {_put_back(old, name, policy)}") from None
    try:
        stack.remove_container(old)
    except NotFound:
        pass  # removed by someone else meanwhile: gone all the same
    except APIError as exc:
        raise SandboxError(f"{what}: the new container runs, but the old one ({old.name}) could not be removed: "
                           f"{_why(exc)}") from None  # fmt: skip
    return new


def _check_image(client: docker.DockerClient, image: str, what: str) -> None:
    """A SandboxError, before anything is touched, when the image to create from is gone."""
    try:
        client.images.get(image)
    except ImageNotFound:
        raise SandboxError(f"{what}: its image {image[:19]} is gone from the engine: expected it still there "
                           "(was it pruned?)") from None  # fmt: skip


def _keep_anonymous_volumes(body: dict[str, Any], old: Container) -> None:
    """Give the new container the old one's volumes at the paths it mounts a volume of no name at
    (an image's VOLUME, an anonymous ``-v /path``): their data stays, as Compose keeps it."""
    held = {m["Destination"]: m["Name"] for m in old.attrs.get("Mounts") or [] if m.get("Type") == "volume"}
    host_config = body.setdefault("HostConfig", {})
    binds = [f"{held[b]}:{b}" if b in held else b for b in host_config.get("Binds") or []]  # "/path": anonymous
    for mount in host_config.get("Mounts") or []:
        if mount.get("Type") == "volume" and not mount.get("Source") and mount.get("Target") in held:
            mount["Source"] = held[mount["Target"]]
    given, declared = _mount_targets({**host_config, "Binds": binds}), body.get("Volumes") or {}
    binds += [f"{name}:{path}" for path, name in held.items() if path in declared and path not in given]
    if binds:
        host_config["Binds"] = binds


def _mount_targets(host_config: dict[str, Any]) -> set[str]:
    """The container paths a HostConfig mounts something at (binds, mounts, tmpfs)."""
    binds = {b.split(":")[1] if ":" in b else b for b in host_config.get("Binds") or []}
    mounts = {m.get("Target", "") for m in host_config.get("Mounts") or []}
    return binds | mounts | set(host_config.get("Tmpfs") or {})


def _set_aside(old: Container, aside: str, what: str) -> None:
    """Stop ``old`` as a restart does, its restart policy held off, and rename it ``aside``."""
    old.update(restart_policy={"Name": "no"})
    mechanisms._stop(old)
    mechanisms._until(lambda: (old.reload() or old.status) != "running", f"{what}: stop of {old.name}", STOP_WAIT_S)
    old.rename(aside)


def _start_new(client: docker.DockerClient, body: dict[str, Any], name: str, others: dict[str, Any]) -> Container:
    """Create, connect and start a container from ``body``; removed again if any step fails."""
    created = client.api.create_container_from_config(body, name)["Id"]
    try:
        for net, endpoint in others.items():
            client.api.connect_container_to_network(created, net, **_connect_options(endpoint))
        client.api.start(created)
        return client.containers.get(created)
    except ENGINE_ERRORS:
        with contextlib.suppress(NotFound):  # its fresh anonymous volumes go with it; named ones stay
            client.api.remove_container(created, v=True, force=True)
        raise


def _connect_options(endpoint: dict[str, Any]) -> dict[str, Any]:
    """The client's connect arguments for an endpoint's inspected settings."""
    ipam = endpoint.get("IPAMConfig") or {}
    links = dict(link.split(":", 1) if ":" in link else (link, link) for link in endpoint.get("Links") or [])
    return {"aliases": endpoint.get("Aliases"), "links": links or None, "driver_opt": endpoint.get("DriverOpts"),
            "ipv4_address": ipam.get("IPv4Address") or None, "ipv6_address": ipam.get("IPv6Address") or None,
            "link_local_ips": ipam.get("LinkLocalIPs") or None}  # fmt: skip


def _put_back(old: Container, name: str, policy: dict[str, Any]) -> str:
    """Rename ``old`` back to ``name``, give it its restart policy again and start it; what became of it."""
    try:
        old.reload()
        if old.name != name:
            old.rename(name)
        old.update(restart_policy={"Name": policy.get("Name") or "no",
                                   "MaximumRetryCount": policy.get("MaximumRetryCount") or 0})  # fmt: skip
        if old.status != "running":
            old.start()
    except _FAILURES as exc:
        return f"putting the old container back failed too ({_why(exc)}): it is {old.name}, {old.status}"
    return f"the old container runs again as {name}"


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, SandboxError) else str(translate(exc))


@edge
def recreate(client: docker.DockerClient, container: Container, project: str) -> Container:
    """A fresh container on fresh, empty named volumes: the data is lost.

    Every volume it mounts must be labelled ``COMPOSE_PROJECT=project`` and mounted by no other
    container, checked before anything is touched (a SandboxError names the one that is not);
    the container is removed (killed: its data goes anyway), its volumes removed and made again
    with the same name, driver, options and labels, and a container created from its creation
    spec (``replace``). Bind mounts stay as they are.
    """
    container.reload()
    what = f"recreate of {container.name}"
    volumes = [_own_volume(client, container, m["Name"], project, what)
               for m in container.attrs.get("Mounts") or [] if m.get("Type") == "volume"]  # fmt: skip
    spec = creation_spec(container)
    _check_image(client, str(spec["Image"]), what)
    stack.remove_container(container)
    for volume in volumes:
        _make_anew(client, volume, what)
    return replace(client, None, spec, what)


def _make_anew(client: docker.DockerClient, volume: Any, what: str) -> None:
    """Remove ``volume`` and create it again empty, with its name, driver, options and labels."""
    attrs = volume.attrs
    try:
        volume.remove()
        client.volumes.create(name=volume.name, driver=attrs.get("Driver"), driver_opts=attrs.get("Options") or None,
                              labels=attrs.get("Labels") or None)  # fmt: skip
    except ENGINE_ERRORS as exc:
        raise SandboxError(f"{what}: its container is removed, but its volume {volume.name} could not be made "
                           f"anew: {_why(exc)}") from None  # fmt: skip


def _own_volume(client: docker.DockerClient, container: Container, name: str, project: str, what: str) -> Any:
    """The volume ``name``, checked to be the project's and mounted by ``container`` alone."""
    volume = client.volumes.get(name)
    labelled = (volume.attrs.get("Labels") or {}).get(COMPOSE_PROJECT)
    if labelled != project:
        found = f"{COMPOSE_PROJECT}={labelled}" if labelled else "no project label (an anonymous or outside volume?)"
        raise SandboxError(f"{what}: its volume {name} has {found}: expected only volumes labelled "
                           f"{COMPOSE_PROJECT}={project}, whose data it may lose")  # fmt: skip
    others = [c.name for c in client.containers.list(all=True, filters={"volume": name}) if c.id != container.id]
    if others:
        raise SandboxError(f"{what}: its volume {name} is also mounted by {', '.join(sorted(others))}: "
                           "expected volumes of its own alone")  # fmt: skip
    return volume


@edge
def clean(container: Container, paths: tuple[str, ...]) -> int:
    """Delete what the declared ``paths`` name inside the container; the number of entries removed.

    Each path is ``DIR`` (everything in it; DIR stays) or ``DIR/PATTERN`` (the entries of DIR whose
    name matches, each with all it holds). Every DIR is checked before anything is deleted, and one
    that fails refuses the whole clean: it must be reached without a symlink, be on a file system
    of the container's own (its root, a volume or a tmpfs of its, never a bind mount of a host
    path), and exist. Deletion never follows a symlink (the link goes, its target stays), nor
    enters another file system or a mount point below DIR: those, and the folders holding them,
    stay. It runs as the container's own user, by ``sh`` and ``find`` in two execs (the checks,
    then the deletion, which checks each DIR's path again).
    """
    what = f"clean of {container.name}"
    targets = [_target(path, what) for path in paths]
    for directory, _ in targets:
        _refuse_bind(container, directory, what)
    points = _checked_dirs(container, [directory for directory, _ in targets], what)
    script = "\n".join(["rc=0", *(_delete_script(d, pattern, points) for d, pattern in targets), "exit $rc"])
    code, out, err = _exec(container, script, what)
    removed = out.count(b"\0")
    if code == _MOVED:
        raise SandboxError(f"{what}: a declared directory was removed, or replaced by a symlink, once checked "
                           f"({removed} entries removed by then): expected it to stay")  # fmt: skip
    if code != 0:
        said = _first_line(err) or f"status {code}"
        raise SandboxError(f"{what}: find failed after removing {removed} entries: {said}")
    return removed


def _target(path: str, what: str) -> tuple[str, str]:
    """(DIR, PATTERN) of a declared path, ``*`` when it names a whole DIR; a SandboxError for a path
    that is not plainly absolute (``labels`` refuses these first: this is the last line)."""
    parts = path.split("/")
    if not path.startswith("/") or any(p in ("", ".", "..") for p in parts[1:]) or any(ord(c) < 32 for c in path):
        raise SandboxError(f"{what}: {path!r} is not a plain absolute path: expected /DIR or /DIR/PATTERN, "
                           "without '.', '..', empty components or control characters")  # fmt: skip
    *dirs, last = parts[1:]
    if any(c in GLOB for p in dirs for c in p) or (not dirs and any(c in GLOB for c in last)):
        raise SandboxError(f"{what}: {path!r} has a pattern outside its last component or right under /: "
                           "expected /DIR/PATTERN with a plain DIR")  # fmt: skip
    if any(c in GLOB for c in last):
        return "/" + "/".join(dirs), last
    return path, "*"


def _within(path: str, top: str) -> bool:
    """Whether ``path`` is ``top`` or below it (both absolute, without symlinks)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def _refuse_bind(container: Container, directory: str, what: str) -> None:
    """A SandboxError when ``directory`` is in a bind mount: the host's files, not the container's."""
    for mount in container.attrs.get("Mounts") or []:
        if mount.get("Type") == "bind" and _within(directory, mount.get("Destination", "")):
            at, source = mount.get("Destination"), mount.get("Source")
            raise SandboxError(f"{what}: {directory} is in a bind mount of the host's {source} (at {at}): "
                               "expected a directory of the container's own")  # fmt: skip


def _checked_dirs(container: Container, dirs: list[str], what: str) -> list[tuple[str, str]]:
    """The container's mounts (mount point, file system type), once every directory is checked to be
    reached without a symlink, on a file system of the container's own (one exec)."""
    probe = [f"r=$(cd -P -- {shlex.quote(d)} 2>/dev/null && pwd -P) || r=; printf '%s\\0' \"$r\"" for d in dirs]
    script = "\n".join([*probe, "while IFS= read -r l; do printf '%s\\n' \"$l\"; done </proc/self/mountinfo"])
    code, out, err = _exec(container, script, what)
    *found, table = out.split(b"\0", len(dirs))
    if code != 0 or len(found) != len(dirs):
        raise SandboxError(f"{what}: cannot check its directories: {_first_line(err) or f'status {code}'}")
    mounts = _mount_table(table.decode(errors="replace"))
    own = _own_mount_points(container)
    for directory, raw in zip(dirs, found, strict=True):
        real = raw.decode(errors="replace")
        if not real:
            raise SandboxError(f"{what}: {directory} is not a directory it can enter (missing?): expected an "
                               "existing directory")  # fmt: skip
        if real != directory:
            raise SandboxError(f"{what}: {directory} is reached through a symlink ({directory} -> "
                               f"{real[:200]!r}): expected a directory of the container's own")  # fmt: skip
        point, fs = max((m for m in mounts if _within(directory, m[0])), key=lambda m: len(m[0]), default=("/", ""))
        if point not in own:
            raise SandboxError(f"{what}: {directory} is on a {fs or 'foreign'} mount at {point}: expected a directory "
                               "of the container's own root file system, volumes or tmpfs mounts")  # fmt: skip
    return mounts


def _mount_table(mountinfo: str) -> list[tuple[str, str]]:
    """(mount point, file system type) of each line of a /proc/PID/mountinfo, in its order."""
    table = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if "-" in fields[6:-1]:  # optional fields end at "-"; the file system type comes next
            table.append((host._unescape(fields[4]), fields[fields.index("-", 6) + 1]))
    return table


def _own_mount_points(container: Container) -> set[str]:
    """Where the container's own file systems are mounted: its root, its volumes, its tmpfs mounts."""
    tmpfs = (container.attrs.get("HostConfig") or {}).get("Tmpfs") or {}
    mounts = container.attrs.get("Mounts") or []
    return {"/", *tmpfs, *(m.get("Destination", "") for m in mounts if m.get("Type") in ("volume", "tmpfs"))}


def _delete_script(directory: str, pattern: str, mounts: list[tuple[str, str]]) -> str:
    """The sh lines deleting the entries of ``directory`` whose name matches ``pattern`` (find -name),
    printing each removed path NUL-terminated; the mount points below it, and the folders that
    hold them, stay."""
    below = sorted({"." + p[len(directory) :] for p, _ in mounts if p != directory and _within(p, directory)})
    kept = {ancestor for rel in below for ancestor in _ancestors(rel)}
    keep = [_glob_literal(p) for p in sorted(kept | set(below))] + [_glob_literal(p) + "/*" for p in below]
    starts_not = [_glob_literal(p) for p in below if p.count("/") == 1]  # a mount point is never a start
    inner = f'exec find "$@" -xdev{_none_of(keep)} -print0 -delete'
    quoted = shlex.quote(directory)
    return (f'cd -P -- {quoted} && [ "$(pwd -P)" = {quoted} ] || exit {_MOVED}\n'
            f"find . ! -name . -prune -name {shlex.quote(pattern)}{_none_of(starts_not)} "
            f"-exec sh -c {shlex.quote(inner)} sh {{}} + || rc=1")  # fmt: skip


def _ancestors(rel: str) -> list[str]:
    """The folders holding a relative path below its start: ./a/b/c -> ./a, ./a/b."""
    parts = rel.split("/")
    return ["/".join(parts[:n]) for n in range(2, len(parts))]


def _glob_literal(path: str) -> str:
    """``path`` as a find -path pattern matching itself alone."""
    return re.sub(r"([\\*?\[])", r"\\\1", path)


def _none_of(patterns: list[str]) -> str:
    """A find expression true for a path matching none of ``patterns`` (find -path), or nothing."""
    if not patterns:
        return ""
    return " ! \\( " + " -o ".join(f"-path {shlex.quote(p)}" for p in patterns) + " \\)"


def _exec(container: Container, script: str, what: str) -> tuple[int, bytes, bytes]:
    """Run ``script`` by sh inside the container: (exit status, stdout, stderr)."""
    try:
        code, (out, err) = container.exec_run(["sh", "-c", f"command -v find >/dev/null || exit 127\n{script}"],
                                              demux=True)  # fmt: skip
    except APIError as exc:
        if exc.status_code == 409:  # not running, or paused
            raise SandboxError(f"{what}: {_why(exc)}: expected it running (a clean runs inside it)") from None
        raise
    if code in _CANNOT_EXEC:
        said = _first_line(err or out or b"") or f"status {code}"
        raise SandboxError(f"{what}: sh or find cannot run inside it ({said}): expected an image with both "
                           "(Debian's, or Alpine's busybox)")  # fmt: skip
    return code, out or b"", err or b""


def _first_line(text: bytes) -> str:
    lines = text.decode(errors="replace").strip().splitlines()
    return lines[0][:200] if lines else ""


@edge
def disk_used(container: Container, dirs: tuple[str, ...]) -> float | None:
    """Fraction in use of the fullest file system holding one of ``dirs`` (one ``df -Pk`` exec), as
    ``host.disk_usage`` reads it (blocks not available to the container count as used); None when
    it cannot be read (not running, no df, none of the dirs there)."""
    if not dirs:
        return None
    try:
        code, out = container.exec_run(["df", "-Pk", "--", *dirs])
    except APIError as exc:
        if exc.status_code == 409:  # not running, or paused
            return None
        raise
    if code in _CANNOT_EXEC:
        return None
    sizes = [(int(m[1]), int(m[3])) for m in _DF_LINE.finditer(out.decode(errors="replace"))]
    used = [1.0 - available / total if total else 0.0 for total, available in sizes]
    return max(used, default=None)
