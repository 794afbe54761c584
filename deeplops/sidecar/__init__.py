"""The remediation sidecar: a trained order policy healing a live stack, behind guard rails.

Every interval it measures the stack as the environment does, asks the policy for a repair,
lets the guards (``guards``) allow or suppress it, applies it through the Docker backend's repair
layer, and writes what it saw, chose, did and what came of it to a JSON audit log, with
Prometheus metrics (``telemetry``) and, if asked, webhook notifications (``notify``).
``daemon.Sidecar`` is the loop; ``live`` finds the stack; ``lock`` keeps it to one sidecar per
project.
"""
