"""The Docker backend: the topology as real containers, with real faults and real repairs.

- ``image``: builds the service image offline (a debootstrapped Debian with python3).
- ``host``: host-side mechanisms (tmpfs volumes, the tc link cap, iptables blocks, counters).
- ``flood``: the traffic flood process behind ``net_saturation``.
- ``reaper``: tears a sandbox down when the process that owns it dies, even by SIGKILL.
- ``stack``: bringing a sandbox's containers up and down, and finding what is there.
- ``sandbox``: ``DockerSandbox``, the Sandbox protocol on top of it all.
"""
