"""The ``sedtune`` command line: parser, dispatch and error reporting.

Every command is a function ``run(args) -> int`` in a small module of its own; this module
wires them into one argparse tree. A :class:`envs.errors.SedtuneInputError` (bad user input)
is printed as one line ``sedtune: error: ...`` with exit code 2; any other failure is printed
as one line too (exit 1), with the traceback only under ``--debug``. An interrupted command
(Ctrl-C, or SIGTERM where a command handles it: :mod:`service.tuning.interrupt`) prints one
line, ``sedtune: interrupted (SIGINT); no results written`` or what it left, and exits with
128 + the signal number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from envs.errors import SedtuneInputError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand registered."""
    from service.commands import data_commands

    parser = argparse.ArgumentParser(
        prog="sedtune",
        description="Tune the post-processing of sound event detection models.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log at INFO level; tune and demo: also show the run's log (Ray, Tune, RLlib, Optuna) live",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data_commands.register(sub)
    _register_optional(sub)
    return parser


def _register_optional(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register command groups that live in other modules, if present."""
    import importlib

    for name in ("tune_commands", "service_commands", "tracking_commands"):
        try:
            mod = importlib.import_module(f"service.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"service.commands.{name}":
                raise
            continue
        mod.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sedtune`` console script.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit code.
    """
    # Ray Tune's new console engine prints tables even at verbose=0; the old one is silent.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        parser = build_parser()  # imports the commands (numpy, pyarrow): a Ctrl-C here is one line too
    except KeyboardInterrupt as e:
        return _interrupted(e)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except SedtuneInputError as e:
        if args.debug:
            raise
        print(f"sedtune: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return _interrupted(e)
    except BrokenPipeError:
        # The reader closed the pipe (``sedtune evaluate --json | head -1``): it has what it
        # wanted, so end quietly; stdout goes to /dev/null so the exit flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as e:  # the user gets one line, never a traceback
        if args.debug:
            raise
        print(
            f"sedtune: failed: {type(e).__name__}: {e} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1


def run() -> NoReturn:
    """The ``sedtune`` console script: :func:`main`, then a fast exit with its code.

    Python's normal exit tears down every module and object left in the process; after a run
    that loaded Ray, Tune, RLlib and torch that took 5.5 s of a 38 s ``sedtune demo``
    (measured), after the results were written. When :func:`main` returns, the command's work
    is done; this ends the process the way a normal exit would, minus that teardown: it joins
    the non-daemon threads, runs the ``atexit`` handlers (logging's flush, the libraries'
    shutdown hooks) and flushes stdout and stderr, then calls ``os._exit``. An exception out
    of :func:`main` (``SystemExit`` from argparse, a ``--debug`` traceback) takes the normal
    exit path. In-process callers (the tests) call :func:`main`. For the same reason the processes of
    a local Ray instance that the command started stop in a background thread (the driver
    disconnects first) while the command writes its results (:mod:`service.tuning.ray_stop`);
    it is one of the threads joined. And
    MLflow's import and store get ready in a helper process while the job runs
    (:mod:`service.results.tracking_helper`).
    """
    from service.results import tracking_helper
    from service.tuning import ray_stop

    ray_stop.stop_in_background()
    tracking_helper.enable()
    code = main()
    main_thread = threading.main_thread()
    for t in threading.enumerate():
        if t is not main_thread and not t.daemon:
            t.join()
    _forget_unfinished_ray()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        # A closed stream or a broken pipe: nothing more can be said there.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _forget_unfinished_ray() -> None:
    """Silence Ray's exit hook when ``import ray`` did not finish (an interrupt during it).

    Ray registers its ``shutdown`` with ``atexit`` half-way through ``import ray``. A signal
    after that point, before the import ends, leaves the hook registered while ``ray`` (and
    perhaps the module holding the hook) is gone or half-initialized; at exit the hook
    imports ``ray`` again, fails, and Python prints the failure as a traceback ("Exception
    ignored in atexit callback"). Such a Ray was never initialized, so there is nothing to
    shut down: the hook is unregistered where its module survived, and otherwise its failure
    is dropped (only that one: every other unraisable exception is reported as before).
    """
    ray = sys.modules.get("ray")
    if ray is not None and not getattr(getattr(ray, "__spec__", None), "_initializing", False):
        return  # imported completely: its hook shuts down whatever it started
    worker = sys.modules.get("ray._private.worker")
    if worker is not None:
        atexit.unregister(worker.shutdown)
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        culprit = unraisable.object
        ours = getattr(culprit, "__module__", None) == "ray._private.worker"
        if not (ours and getattr(culprit, "__name__", None) == "shutdown"):
            previous(unraisable)

    sys.unraisablehook = hook


def _interrupted(e: KeyboardInterrupt) -> int:
    """One line for an interrupted command; its exit code (128 + the signal number)."""
    from service.tuning.interrupt import Interrupted

    if isinstance(e, Interrupted):
        print(f"sedtune: {e.line()}", file=sys.stderr)
        return e.exit_code
    print("sedtune: interrupted (SIGINT)", file=sys.stderr)  # Python's own SIGINT handler
    return 130


def _one_line(text: str) -> str:
    """Collapse a message onto one line (errors are reported as exactly one line)."""
    return " ".join(text.split())


if __name__ == "__main__":
    run()
