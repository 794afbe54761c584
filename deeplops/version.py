"""The installed package's version, as the files deeplops writes record it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("deeplops")
except PackageNotFoundError:  # running from a source tree that was not installed
    VERSION = "0.0.0"
