"""Where shipped data lives (envs/, scenarios/, agents/) and how files are read.

In a checkout the folders sit beside the package; in an installed wheel they are package
data under ``deeplops/_data``. Both are found the same way.
"""

from __future__ import annotations

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


def read_yaml(path: Path, error: type[DeeplopsError]) -> Any:
    """Parse a YAML file, turning a missing file or a syntax error into ``error``."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot be read as a text file ({exc.__class__.__name__})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise error(f"{path}: malformed YAML{where}: {problem}") from None
