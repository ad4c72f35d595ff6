"""Errors a user can fix. The CLI prints their message as one line, without a traceback."""


class UserError(Exception):
    """A mistake in the user's input (arguments, files, configuration).

    The message must say what is wrong and what to do next.
    """


class DataFormatError(UserError):
    """Raw data files are missing, malformed, or not in a recognised format."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. Not a ``KeyboardInterrupt`` on purpose: Lightning turns
    that into ``sys.exit(1)`` inside ``Trainer.fit``, while any other ``BaseException`` is
    re-raised after its teardown, so the runner can close its MLflow runs and the CLI can
    print how to resume."""

    def __init__(self, signum: int):
        super().__init__(signum)  # args stay (signum,): it crosses process pools pickled
        self.signum = int(signum)

    @property
    def name(self) -> str:
        import signal

        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        return self.name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def report(self) -> int:
        """Print the one line a stopped command ends with; return its exit status."""
        import sys

        print(f"interrupted ({self.name}); rerun the same command to resume", file=sys.stderr,
              flush=True)
        return self.exit_code


_RECEIVED: list[int] = []


def received_signal() -> int | None:
    """The signal :func:`raise_on_signals` turned into :class:`Interrupted`, if any.

    Code that raises inside an import (a C extension, mid-load) can lose the exception to an
    ``ImportError``; the runner asks this to still treat such a failure as the interruption."""
    return _RECEIVED[-1] if _RECEIVED else None


def exit_on_signals() -> None:
    """Until :func:`raise_on_signals` takes over: on SIGINT / SIGTERM print the one line and
    exit at once. For start-up, while the heavy imports run and nothing is recorded yet (an
    exception raised inside an extension module's import would surface as an ImportError)."""
    import os
    import signal

    def handler(signum: int, frame: object) -> None:
        os._exit(Interrupted(signum).report())

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def raise_on_signals() -> dict[int, object]:
    """Turn SIGINT and SIGTERM into :class:`Interrupted` in this process (main thread only).
    Returns the handlers it replaced, for :func:`restore_signals`."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    _RECEIVED.clear()

    def handler(signum: int, frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not break the clean-up
            signal.signal(sig, signal.SIG_IGN)
        _RECEIVED.append(signum)
        raise Interrupted(signum)

    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def restore_signals(previous: dict[int, object]) -> None:
    """Put back the handlers :func:`raise_on_signals` replaced (in-process callers, tests)."""
    import signal

    for sig, old in previous.items():
        signal.signal(sig, old)  # type: ignore[arg-type]
