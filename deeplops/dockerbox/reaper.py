"""Tears a sandbox down once the process that owns it is gone, however it died (even SIGKILL).

Started by DockerSandbox as ``python -m deeplops.dockerbox.reaper OWNER_PID SANDBOX`` in its own
session; the owner kills it after a clean close.
"""

from __future__ import annotations

import os
import sys
import time


def owner_alive(pid: int) -> bool:
    """Whether process ``pid`` still exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead, just not yet reaped
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main(owner: int, sandbox: str) -> None:
    """Wait for ``owner`` to exit, then remove everything of ``sandbox``."""
    while owner_alive(owner):
        time.sleep(0.5)
    from deeplops.dockerbox.stack import down

    down(sandbox)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
