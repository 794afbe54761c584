"""Tears a sandbox down once the process that owns it is gone, however it died (even SIGKILL).

Its owner is judged by ``owner.owner_gone``; a sandbox whose reaper died with its owner is stale,
and ``stack.reap_stale`` removes it.

Started by DockerSandbox as ``python -m deeplops.dockerbox.reaper OWNER SANDBOX`` in its own
session; the owner kills it after a clean close.
"""

from __future__ import annotations

import sys
import time

from deeplops.dockerbox.host import check_name
from deeplops.dockerbox.owner import owner_gone


def main(owner: str, sandbox: str) -> None:
    """Wait for ``owner`` to exit, then remove everything of ``sandbox``."""
    check_name(sandbox)
    while not owner_gone(owner):
        time.sleep(0.5)
    # Only now: the reaper waits out its sandbox's whole life, without the Docker client in memory.
    from deeplops.dockerbox.stack import down

    down(sandbox)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
