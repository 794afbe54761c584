"""A Chaos Toolkit extension: deeplops faults, repairs and health checks as Chaos Toolkit actions
and probes on a live sandbox (``deeplops sandbox up --name NAME``), and experiments read and
written as deeplops drills.

In an experiment (see ``examples/chaostoolkit-db-kill.json``)::

    {"type": "action", "name": "kill-db",
     "provider": {"type": "python", "module": "deeplops.chaostoolkit.actions",
                  "func": "inject_fault", "arguments": {"fault": "kill", "target": "db", "sandbox": "drill"}}}

Install with the ``chaostoolkit`` extra: ``pip install "deeplops[chaostoolkit]"``.
"""
