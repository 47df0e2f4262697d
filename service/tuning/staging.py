"""Where a job's results go: staged, then published in one step when the job is complete.

Two kinds of output folder, with one interface (:class:`OutputFolder`):

- :class:`StagedOutput` (``sedtune tune``, ``sedtune demo``): the whole run (strategy work
  folders, then the results) happens in a temporary sibling of the target,
  ``<parent>/.<name>.sedtune-staging-XXXXXXXX``, renamed to the target when everything is
  written. A target that is not empty is refused before anything runs
  (:func:`check_output`) unless ``force``; with ``force`` the old folder is replaced only at
  that rename (moved aside, the new one renamed in, the old one deleted). An interrupted,
  failed or killed run never leaves anything at the target; a killed one (SIGKILL) leaves its
  staging folder beside it.
- :class:`InPlaceOutput` (the Ray job process): the job's own fresh folder, where its
  ``status.json`` and work folders live while it runs; the results are written into
  ``<target>/.sedtune-results-XXXXXXXX`` and moved up into the folder when complete.

Publishing is a few renames inside :func:`service.tuning.interrupt.deferred`: a signal does
not cut it in half.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from typing import Protocol

from envs.errors import SedtuneInputError
from envs.folders import fresh_dir
from service.tuning import interrupt

LOG = logging.getLogger(__name__)

#: The results written last when moved up (what readers look for first).
_LAST = ("comparison.json", "best_params.json")


class OutputFolder(Protocol):
    """A job's output folder while the job runs."""

    @property
    def run_dir(self) -> str:
        """The folder the runner works in (strategy work folders go to ``<run_dir>/work``)."""

    def results_dir(self) -> str:
        """The folder to write the results into (created on first call)."""

    def publish(self) -> None:
        """Make the written results the target's (call once, when complete)."""

    def discard(self) -> None:
        """Remove what the run staged (after a failure or an interrupt); the target is untouched."""


def check_output(target: str, force: bool) -> None:
    """Refuse an output target that is a file, or a folder with anything in it (unless ``force``).

    Args:
        target: The output folder.
        force: Accept a non-empty folder (it is replaced when the run completes).

    Raises:
        SedtuneInputError: One line naming the folder.
    """
    if os.path.lexists(target) and not os.path.isdir(target):
        raise SedtuneInputError(f"output {target}: is a file, not a folder; choose another output")
    if not os.path.isdir(target) or force:
        return
    try:
        entries = os.listdir(target)
    except OSError as e:
        raise SedtuneInputError(f"output {target}: cannot read the folder ({e.strerror or e})") from None
    if entries:
        raise SedtuneInputError(
            f"output {target}: the folder is not empty ({len(entries)} entries); choose another output "
            "or pass --force to replace it when this run completes"
        )


class StagedOutput:
    """The whole run in a temporary sibling of ``target``, renamed into place when complete.

    Args:
        target: The output folder (refused by :func:`check_output` unless ``force``).
        force: Replace a non-empty target when publishing.

    Raises:
        SedtuneInputError: The target is refused, or its parent folder cannot hold the staging
            folder.
    """

    def __init__(self, target: str, force: bool = False) -> None:
        check_output(target, force)
        self.target = os.path.realpath(target)
        self.force = force
        self._keep = False
        parent, name = os.path.split(self.target)
        try:
            os.makedirs(parent, exist_ok=True)
            self.path = fresh_dir(parent, f".{name}.sedtune-staging-")
        except OSError as e:
            raise SedtuneInputError(
                f"output {target}: cannot create a folder in {parent} ({e.strerror or e})"
            ) from None

    @property
    def run_dir(self) -> str:
        """The staging folder."""
        return self.path

    def results_dir(self) -> str:
        """The staging folder (the results sit beside the work folders, as in the target)."""
        return self.path

    def publish(self) -> None:
        """Rename the staging folder to the target (moving an old target aside with ``force``).

        Raises:
            SedtuneInputError: The target was filled by someone else while the job ran (and no
                ``force``): the results stay in the staging folder, named in the message.
        """
        old = None
        with interrupt.deferred():
            try:
                os.rename(self.path, self.target)  # atomic; replaces a missing or empty folder
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not self.force:
                    self._keep = True
                    taken = e.errno in (errno.ENOTEMPTY, errno.EEXIST)
                    why = "was filled while this run ran" if taken else f"cannot be replaced ({e.strerror})"
                    raise SedtuneInputError(
                        f"output {self.target}: {why}; the results are kept in {self.path}"
                    ) from None
                parent, name = os.path.split(self.target)
                old = tempfile.mkdtemp(prefix=f".{name}.sedtune-replaced-", dir=parent)
                os.rename(self.target, os.path.join(old, name))
                try:
                    os.rename(self.path, self.target)
                except OSError:
                    os.rename(os.path.join(old, name), self.target)  # the old folder back
                    os.rmdir(old)
                    self._keep = True
                    raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        """Delete the staging folder (kept when :meth:`publish` refused to replace the target)."""
        if not self._keep:
            shutil.rmtree(self.path, ignore_errors=True)


class InPlaceOutput:
    """The job's own folder; results staged in a hidden sub-folder and moved up when complete.

    Args:
        target: The job's output folder (created if missing).
    """

    def __init__(self, target: str) -> None:
        self.target = target
        self._results: str | None = None
        os.makedirs(target, exist_ok=True)

    @property
    def run_dir(self) -> str:
        """The target itself."""
        return self.target

    def results_dir(self) -> str:
        """``<target>/.sedtune-results-XXXXXXXX`` (created on first call)."""
        if self._results is None:
            self._results = tempfile.mkdtemp(prefix=".sedtune-results-", dir=self.target)
        return self._results

    def publish(self) -> None:
        """Move every result up into the target (``comparison.json`` and ``best_params.json`` last)."""
        src = self.results_dir()
        names = sorted(os.listdir(src), key=lambda n: (n in _LAST, _LAST.index(n) if n in _LAST else 0, n))
        with interrupt.deferred():
            for name in names:
                dest = os.path.join(self.target, name)
                if os.path.isdir(dest) and not os.path.islink(dest):
                    shutil.rmtree(dest)
                os.replace(os.path.join(src, name), dest)
            os.rmdir(src)
        self._results = None

    def discard(self) -> None:
        """Delete the staged results (the job's status file and work folders stay)."""
        if self._results is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._results)
            self._results = None
