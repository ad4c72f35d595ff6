"""The ``harness`` console script: SIGINT / SIGTERM handled from the first instruction.

Importing the CLI pulls in torch, Lightning and MLflow (seconds); a signal in that window
used to end in a ``KeyboardInterrupt`` traceback or a silent exit. The handlers are set here,
before those imports (exiting at once: nothing is recorded yet), so every moment of a
command ends with the same one line.
"""

from __future__ import annotations

import sys

from harness.errors import Interrupted, exit_on_signals


def main() -> None:
    exit_on_signals()  # harness.cli.main raises Interrupted from then on (raise_on_signals)
    try:
        from harness.cli import main as cli_main

        code = cli_main()
    except Interrupted as exc:
        code = exc.report()
    except BrokenPipeError:  # `harness list | head`: the reader left; no traceback
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.exit(code)
