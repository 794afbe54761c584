"""The flood behind ``net_saturation``: UDP traffic at a service, far above its link's capacity.

Run as ``python -m deeplops.dockerbox.flood IP BYTES_PER_S``. It sends until killed, and stops
by itself when the process that started it is gone, so a crashed owner leaves no flood behind.
Send errors (the rate_limit repair's iptables block makes sends fail) are ignored: the flood
goes on, it just no longer arrives.
"""

from __future__ import annotations

import os
import socket
import sys
import time

_PAYLOAD = b"\0" * 1400
_SO_SNDBUFFORCE = 32  # lets the queue behind the link cap grow: seconds of delay, not milliseconds


def flood(ip: str, bytes_per_s: float, parent: int) -> None:
    """Send UDP datagrams to ``ip``:9 at ``bytes_per_s`` until ``parent`` exits."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_SNDBUFFORCE, 8 << 20)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    burst = 20
    interval = burst * len(_PAYLOAD) / bytes_per_s
    deadline = time.monotonic()
    checked = deadline
    while True:
        for _ in range(burst):
            try:  # noqa: SIM105 - the hot loop: cheaper than contextlib.suppress
                sock.sendto(_PAYLOAD, (ip, 9))
            except OSError:
                pass
        deadline += interval
        now = time.monotonic()
        if now - checked > 0.5:
            if os.getppid() != parent:
                return
            checked = now
        if deadline > now:
            time.sleep(deadline - now)
        else:
            deadline = now  # never try to catch up in a burst


if __name__ == "__main__":
    flood(sys.argv[1], float(sys.argv[2]), os.getppid())
