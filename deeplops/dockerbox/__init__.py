"""The Docker backend: the topology as real containers, with real faults and real repairs.

- ``image``: builds the service image offline (a debootstrapped Debian with python3).
- ``host``: host-side mechanisms (tmpfs volumes, the tc link cap, iptables blocks, counters).
- ``flood``: the traffic flood process behind ``net_saturation``.
- ``owner``: the process a sandbox is made for, and whether it is gone.
- ``reaper``: tears a sandbox down when the process that owns it dies, even by SIGKILL.
- ``engine``: the edge with the engine: the client's errors become ``EngineError``.
- ``stack``: bringing a sandbox's containers up and down, and finding what is there.
- ``handle``: ``StackHandle``, the part of a live stack the mechanisms act on.
- ``restore``: a volume's data, and the restore from backup a ``recreate`` owes it.
- ``releases``: each service's release history (deploys and rollbacks), as its container carries it.
- ``mechanisms``: every fault and repair by its real mechanism, deploys and rollbacks included.
- ``sandbox``: ``DockerSandbox``, the Sandbox protocol on top of it all.
- ``attached``: live sandboxes attached once per process (the Chaos Toolkit actions, the sidecar's trials).
- ``calibrate``: measures the real system and derives the simulator's parameters.
"""
