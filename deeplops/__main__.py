"""``python -m deeplops``: the command line, as the ``deeplops`` script (the sidecar image's entry point)."""

from deeplops.cli import main

main()
