"""The ``harness`` console script: SIGINT / SIGTERM handled from the first instruction.

Importing the CLI pulls in torch, Lightning and MLflow (seconds); a signal in that window
used to end in a ``KeyboardInterrupt`` traceback or a silent exit. The handlers are set here,
before those imports (exiting at once: nothing is recorded yet), so every moment of a
command ends with the same one line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from harness.errors import Interrupted, exit_on_signals


def _without_sqlalchemy_gc_noise(
        hook: Callable[[sys.UnraisableHookArgs], Any]) -> Callable[[sys.UnraisableHookArgs], None]:
    """``hook`` minus one known piece of shutdown noise.

    SQLAlchemy's ``event.registry._collection_gced`` (a weakref callback; MLflow's store uses
    SQLAlchemy) tests ``ref in dict``, which hashes the ref; a ref first hashed after its
    object died raises ``TypeError: weak object has gone away``, printed as "Exception
    ignored in ..." after our last line when it happens during interpreter shutdown.
    """

    def quiet(unraisable: sys.UnraisableHookArgs) -> None:
        obj = unraisable.object
        if isinstance(unraisable.exc_value, TypeError) and \
                getattr(obj, "__qualname__", "") == "_collection_gced" and \
                "sqlalchemy" in getattr(obj, "__module__", ""):
            return
        hook(unraisable)

    return quiet


def main() -> None:
    sys.unraisablehook = _without_sqlalchemy_gc_noise(sys.unraisablehook)
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
