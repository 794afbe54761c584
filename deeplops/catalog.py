"""Where shipped data lives (envs/, scenarios/, agents/) and how files are read.

In a checkout the folders sit beside the package; in an installed wheel they are package
data under ``deeplops/_data``. Both are found the same way.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import yaml

from deeplops.errors import DeeplopsError

_PACKAGE = Path(__file__).resolve().parent


def data_dir(kind: str) -> Path:
    """The shipped folder ``kind`` (``envs``, ``scenarios`` or ``agents``)."""
    for candidate in (_PACKAGE / "_data" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise DeeplopsError(f"shipped folder {kind!r} not found beside the package: the installation is incomplete")


def shipped_envs() -> list[str]:
    """Names of the topologies shipped under ``envs/``."""
    return sorted(p.stem for p in data_dir("envs").glob("*.yaml"))


def resolve_env(ref: str | Path, relative_to: Path | None = None) -> Path:
    """The file of a topology given by shipped name (``shop``) or by path.

    A path is tried relative to ``relative_to`` first (a scenario's folder), then as given.
    """
    from deeplops.errors import ConfigError

    text = str(ref)
    if text in shipped_envs():
        return data_dir("envs") / f"{text}.yaml"
    candidates = [Path(text)]
    if relative_to is not None and not Path(text).is_absolute():
        candidates.insert(0, relative_to / text)
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(f"topology {text!r} not found: expected a file path or one of {', '.join(shipped_envs())}")


MAX_FILE_BYTES = 256 * 2**20
"""Largest trace read (a day-long one is about 100 MiB); bigger files are refused unread."""
MAX_DOCUMENT_BYTES = 4 * 2**20
"""Largest YAML or JSON document read (topologies, scenarios, experiments are a few KiB)."""


def read_text(path: Path, error: type[DeeplopsError], expected: str, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of the regular file ``path``; anything else (missing, a folder or device, too
    big, binary) is ``error`` saying what was ``expected``, never what the file holds."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{path}: file not found: expected {expected}") from None
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror}): expected {expected}") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: not a regular file: expected {expected}")
    if info.st_size > limit:
        size = f"{info.st_size / 2**20:.0f} MiB"
        raise error(f"{path}: {size}, more than the {limit / 2**20:.0f} MiB read: expected {expected}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror}): expected {expected}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start}): expected {expected}") from None
    if "\0" in text:
        raise error(f"{path}: a binary file (it holds NUL bytes): expected {expected}")
    return text


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing what our files never need and users never mean: a key given
    twice (the last would silently win) and anchors/aliases (a few lines can expand to gigabytes)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if isinstance(key, list | dict):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
                )
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {str(key)[:40]!r} appears twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None,
                None,
                "anchors and aliases (& and *) are not accepted",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        return super().compose_node(parent, index)


def read_yaml(path: Path, error: type[DeeplopsError], expected: str = "a YAML file") -> Any:
    """Parse a YAML file strictly; a missing, unreadable or malformed file is ``error``."""
    text = read_text(path, error, expected, MAX_DOCUMENT_BYTES)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: builds plain values only
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise error(f"{path}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise error(f"{path}: nested too deeply: expected {expected}") from None


def parse_json(text: str, error: type[DeeplopsError], where: str, expected: str) -> Any:
    """Parse JSON strictly: a key given twice, NaN or Infinity are ``error`` at ``where``."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in items:
            if key in found:
                raise error(f"{where}: key {key[:40]!r} appears twice in an object: expected {expected}")
            found[key] = value
        return found

    def constant(name: str) -> Any:
        raise error(f"{where}: {name} is not a JSON number: expected {expected}")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno}, column {exc.colno}"
        raise error(f"{where}: not JSON ({exc.msg} at {at}): expected {expected}") from None
    except RecursionError:
        raise error(f"{where}: nested too deeply: expected {expected}") from None
