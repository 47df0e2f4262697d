"""The console script's fast exit (:func:`service.cli.run`) ends the process like a normal exit.

It skips only the interpreter's teardown: the exit code is main's, buffered output is
flushed, ``atexit`` handlers run and non-daemon threads finish first. It also lets a local Ray
instance stop in the background (its thread is one of those joined).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import atexit, sys, threading, time
    import service.cli as cli
    from service.tuning import ray_stop

    def fake_main(argv=None):
        atexit.register(lambda: sys.stdout.write("atexit ran\\n"))
        def late():
            time.sleep(0.3)
            with open(sys.argv[1], "w") as f:
                f.write("thread done")
        threading.Thread(target=late).start()
        sys.stdout.write(f"background stop {ray_stop._background}; buffered output, no newline")
        return 3

    cli.main = fake_main
    cli.run()
    sys.stdout.write("never reached\\n")
    """
)


def test_run_exits_with_mains_code_after_flush_atexit_and_threads(tmp_path: Path) -> None:
    marker = tmp_path / "thread.txt"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(marker)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 3, proc.stderr
    # The command saw Ray's background shutdown enabled (service.tuning.ray_stop).
    assert proc.stdout == "background stop True; buffered output, no newlineatexit ran\n"
    assert marker.read_text() == "thread done"


def test_run_leaves_exceptions_to_the_normal_exit() -> None:
    # argparse's SystemExit (no command given) goes through Python's normal exit.
    proc = subprocess.run(
        [sys.executable, "-c", "import service.cli as c; c.run()"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "usage: sedtune" in proc.stderr


# An interrupt lands while ``import ray`` runs, after Ray registered its exit hook. Either
# ``ray._private.worker`` (the hook's module) is complete and ``ray`` itself is not: the import
# of ``ray.client_builder`` near the end of ``ray/__init__.py`` raises KeyboardInterrupt; or the
# signal came inside ``ray._private.worker`` after the registration, so the import system
# dropped both modules (and kept the ones they had imported): simulated after a complete import.
INTERRUPTED_IMPORT = textwrap.dedent(
    """
    import sys
    import service.cli as cli

    class Interrupt:
        def find_spec(self, name, path=None, target=None):
            if name == "ray.client_builder":
                raise KeyboardInterrupt
            return None

    def fake_main(argv=None):
        if sys.argv[1] == "in-ray":
            sys.meta_path.insert(0, Interrupt())
            try:
                import ray  # noqa: F401
            except KeyboardInterrupt:
                sys.meta_path.pop(0)
                return cli._interrupted(KeyboardInterrupt())
            raise AssertionError("not interrupted")
        import ray  # noqa: F401
        del sys.modules["ray"], sys.modules["ray._private.worker"]
        return cli._interrupted(KeyboardInterrupt())

    cli.main = fake_main
    cli.run()
    """
)


@pytest.mark.parametrize("where", ["in-ray", "in-its-worker-module"])
def test_an_interrupt_during_import_ray_exits_without_rays_exit_hook_traceback(where: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_IMPORT, where], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "sedtune: interrupted (SIGINT)\n"
