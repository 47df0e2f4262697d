"""The port to Ray: submit, poll, stop jobs; the real adapter is the Ray Jobs API.

:class:`Submitter` is what the service needs from a cluster. :class:`RayJobsSubmitter` talks to
a Ray dashboard with :class:`ray.job_submission.JobSubmissionClient` (token auth as configured
for every Ray client: ``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN`` in the service's environment).
Unit tests use a fake (``tests/fakes.py``).

The submission id of a Ray job is the sedtune job id, so a submission repeated after a crash
or a time-out cannot start the job twice: Ray refuses the second one, and
:meth:`Submitter.submit` reports it as :class:`AlreadySubmittedError`.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

LOG = logging.getLogger(__name__)


class SubmitterError(Exception):
    """The cluster could not be reached or refused a request (one line, with the address)."""


class AlreadySubmittedError(SubmitterError):
    """A job with this submission id already exists on the cluster."""


class UnknownJobError(SubmitterError):
    """The cluster does not know the job (e.g. the cluster was replaced)."""


@dataclass(frozen=True)
class RayJobState:
    """What the cluster says about a job.

    Attributes:
        status: ``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``STOPPED``.
        message: Ray's message (why it failed), if any.
    """

    status: str
    message: str | None = None


class Submitter(ABC):
    """Submit, poll and stop jobs on a cluster."""

    @abstractmethod
    def submit(
        self,
        submission_id: str,
        entrypoint: str,
        env: dict[str, str],
        metadata: dict[str, str],
        working_dir: str | None = None,
    ) -> str:
        """Start a job.

        Args:
            submission_id: Unique id (the sedtune job id).
            entrypoint: Shell command run on the cluster (built by sedtune, never from a request).
            env: Environment variables of the entrypoint.
            metadata: Labels shown by Ray (job name, schedule).
            working_dir: A local folder Ray uploads to the cluster and runs the entrypoint in
                (its files reach the job whatever node it lands on), or None.

        Returns:
            The Ray submission id.

        Raises:
            AlreadySubmittedError: The id is taken (the job was submitted before).
            SubmitterError: The cluster cannot be reached or refused the job.
        """

    @abstractmethod
    def state(self, ray_job_id: str) -> RayJobState:
        """The job's state.

        Raises:
            UnknownJobError: The cluster does not know the job.
            SubmitterError: The cluster cannot be reached.
        """

    @abstractmethod
    def stop(self, ray_job_id: str) -> bool:
        """Ask the cluster to stop the job; False if it had already ended.

        Raises:
            SubmitterError: The cluster cannot be reached.
        """

    @abstractmethod
    def ping(self) -> None:
        """Check the cluster answers.

        Raises:
            SubmitterError: It does not.
        """


def _line(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:400]


class RayJobsSubmitter(Submitter):
    """The Ray Jobs API of a cluster (the dashboard's address, e.g. ``http://127.0.0.1:8265``).

    The client is created on first use (its constructor contacts the dashboard) and again after
    a connection failure, so the service starts while the cluster is down and recovers when it
    comes back.

    Args:
        address: Dashboard URL.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self._client: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._client is None:
                from ray.job_submission import JobSubmissionClient

                try:
                    self._client = JobSubmissionClient(self.address)
                except Exception as e:
                    raise SubmitterError(f"cannot reach the Ray Jobs API at {self.address} "
                                         f"({_line(e)})") from e
            return self._client

    def _reset(self) -> None:
        with self._lock:
            self._client = None

    def submit(
        self,
        submission_id: str,
        entrypoint: str,
        env: dict[str, str],
        metadata: dict[str, str],
        working_dir: str | None = None,
    ) -> str:
        """See :meth:`Submitter.submit`."""
        client = self._get()
        runtime_env: dict[str, object] = {"env_vars": env}
        if working_dir is not None:
            runtime_env["working_dir"] = working_dir
        try:
            return str(client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                         runtime_env=runtime_env, metadata=metadata))
        except Exception as e:
            text = str(e)
            if "already" in text.lower() and submission_id in text:
                raise AlreadySubmittedError(f"Ray job {submission_id} already exists at {self.address}") \
                    from e
            self._reset()
            raise SubmitterError(f"Ray at {self.address} did not accept job {submission_id} "
                                 f"({_line(e)})") from e

    def state(self, ray_job_id: str) -> RayJobState:
        """See :meth:`Submitter.state`."""
        client = self._get()
        try:
            info = client.get_job_info(ray_job_id)
        except Exception as e:
            if "does not exist" in str(e) or "404" in str(e):
                raise UnknownJobError(f"Ray at {self.address} does not know job {ray_job_id}") from e
            self._reset()
            raise SubmitterError(f"cannot read job {ray_job_id} from Ray at {self.address} "
                                 f"({_line(e)})") from e
        return RayJobState(str(info.status.value), info.message or None)

    def stop(self, ray_job_id: str) -> bool:
        """See :meth:`Submitter.stop`."""
        client = self._get()
        try:
            return bool(client.stop_job(ray_job_id))
        except Exception as e:
            if "does not exist" in str(e):
                return False
            self._reset()
            raise SubmitterError(f"cannot stop job {ray_job_id} on Ray at {self.address} ({_line(e)})") from e

    def ping(self) -> None:
        """See :meth:`Submitter.ping`."""
        client = self._get()
        try:
            client.get_version()
        except Exception as e:
            self._reset()
            raise SubmitterError(f"the Ray Jobs API at {self.address} does not answer ({_line(e)})") from e
