"""Test support: a real 2-node Ray cluster, an MLflow server and ``sedtune serve`` on loopback.

Every process is started through ``deploy/entrypoint.sh ROLE`` (``ray-head``, ``ray-worker``,
``mlflow``, ``api``), the script the image, docker-compose.yml and the Kubernetes manifests run:
only the environment differs (loopback addresses, free ports, our own temp directories), so a
command that drifts from what is deployed fails here. Readiness is the script's own
``healthcheck ROLE``, the probe docker-compose.yml uses. Ray runs with token auth, as deployed
(``RAY_AUTH_TOKEN``, a fresh token per test session, given to every Ray node and client we start).

Every process runs in its own process group and is stopped by that group (``ray stop`` would stop
every Ray on the machine, other people's too). Ray workers and job drivers that left the group are
found by our unique temp directory or job ids in their command lines and killed by PID.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from tests.integration.mlflow_support import MlflowServer
from tests.ports import free_port

BIN = Path(sys.executable).parent
SEDTUNE = str(BIN / "sedtune")
ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
RAY_TOKEN = secrets.token_hex(16)
# Variables of deploy/entrypoint.sh, sedtune and Ray that a developer's shell must not leak into
# the processes we start (we set the ones we mean).
_SCRUB_PREFIXES = ("RAY_", "SEDTUNE_", "MLFLOW_", "KUBERAY_")


def role_cmd(role: str, *args: str) -> list[str]:
    """The command line of ``deploy/entrypoint.sh ROLE ARGS...``."""
    return ["bash", str(ENTRYPOINT), role, *args]


def base_env(**extra: str) -> dict[str, str]:
    """The environment of every process we start: Ray token auth, our venv first, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUB_PREFIXES)}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=RAY_TOKEN, RAY_USAGE_STATS_ENABLED="0",
               RAY_DISABLE_DOCKER_CPU_WARNING="1", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def ray_headers() -> dict[str, str]:
    """Authorization for the Ray dashboard's REST API (token auth is on)."""
    return {"Authorization": f"Bearer {RAY_TOKEN}"}


def start_role(
    role: str, env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``deploy/entrypoint.sh ROLE`` in its own process group, output into ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(role_cmd(role), stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)


def healthy(role: str, env: dict[str, str]) -> bool:
    """``deploy/entrypoint.sh healthcheck ROLE`` (docker-compose's probe) with the role's environment."""
    p = subprocess.run(role_cmd("healthcheck", role), env=env, capture_output=True, timeout=30)
    return p.returncode == 0


def wait_healthy(role: str, env: dict[str, str], proc: subprocess.Popen[bytes], timeout_s: float,
                 log_tail: Callable[[], str]) -> None:
    """Wait until the role's healthcheck passes; raise with the log's end if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{role} exited ({proc.returncode}):\n{log_tail()}")
        if healthy(role, env):
            return
        time.sleep(0.5)
    raise RuntimeError(f"{role} not healthy within {timeout_s} s:\n{log_tail()}")


def _kill_group(proc: subprocess.Popen[bytes], timeout_s: float = 8.0) -> None:
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def kill_matching(markers: list[str]) -> list[int]:
    """Kill (by PID) our own processes whose command line contains one of ``markers``."""
    me = os.getpid()
    killed = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if p.info["pid"] != me and any(m in cmd for m in markers):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                p.kill()
                killed.append(p.info["pid"])
    return killed


@dataclass
class RayCluster:
    """A head node (dashboard + Jobs API) and one worker node on 127.0.0.1.

    Attributes:
        root: Our temp directory (short: Unix socket paths are limited to ~100 bytes).
        gcs_port: The head's GCS port.
        dashboard_port: The dashboard / Jobs API port.
        procs: The ``entrypoint.sh ray-head|ray-worker`` processes (``ray start --block``; head first).
    """

    root: Path
    gcs_port: int = 0
    dashboard_port: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def dashboard_url(self) -> str:
        """The Jobs API address."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _node_env(self, name: str, cpus: int, **extra: str) -> dict[str, str]:
        """The entrypoint's variables for one node: loopback, its own ports and temp dir."""
        tmp = self.root / name
        tmp.mkdir(parents=True, exist_ok=True)
        return base_env(
            RAY_NODE_IP="127.0.0.1", RAY_NUM_CPUS=str(cpus), RAY_TEMP_DIR=str(tmp),
            RAY_OBJECT_STORE_MEMORY=str(150 * 1024 * 1024),
            RAY_NODE_MANAGER_PORT=str(free_port()), RAY_OBJECT_MANAGER_PORT=str(free_port()),
            RAY_DASHBOARD_AGENT_LISTEN_PORT=str(free_port()), RAY_DASHBOARD_AGENT_GRPC_PORT=str(free_port()),
            RAY_RUNTIME_ENV_AGENT_PORT=str(free_port()), RAY_METRICS_EXPORT_PORT=str(free_port()),
            RAY_MIN_WORKER_PORT="0", RAY_MAX_WORKER_PORT="0", **extra,
        )

    def _start_node(self, role: str, name: str, env: dict[str, str], timeout_s: float) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        proc = start_role(role, env, self.root / f"{name}.log", cwd=self.root)
        self.procs.append(proc)
        wait_healthy(role, env, proc, timeout_s, self.log_tail)

    def start(self, timeout_s: float = 120.0) -> RayCluster:
        """Start the head (2 CPUs) and a worker (1 CPU); wait until both nodes are alive."""
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        head = self._node_env("h", 2, RAY_GCS_PORT=str(self.gcs_port), RAY_DASHBOARD_HOST="127.0.0.1",
                              RAY_DASHBOARD_PORT=str(self.dashboard_port),
                              RAY_CLIENT_SERVER_PORT=str(free_port()))
        self._start_node("ray-head", "h", head, timeout_s)
        worker = self._node_env("w", 1, RAY_HEAD_ADDRESS=f"127.0.0.1:{self.gcs_port}")
        self._start_node("ray-worker", "w", worker, timeout_s)
        self._wait_nodes(2, timeout_s)
        return self

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"ray start exited ({p.returncode}):\n{self.log_tail()}")

    def _wait_nodes(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        alive = 0
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                r = requests.get(f"{self.dashboard_url}/nodes?view=summary", headers=ray_headers(), timeout=5)
                nodes = r.json()["data"]["summary"]
                alive = sum(1 for x in nodes if x.get("raylet", {}).get("state") == "ALIVE")
                if alive >= n:
                    return
            except (requests.RequestException, ValueError, KeyError, TypeError):
                pass
            time.sleep(1.0)
        raise RuntimeError(f"{alive} of {n} Ray nodes alive after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        """The end of the nodes' logs."""
        out = []
        for name in ("h", "w"):
            p = self.root / f"{name}.log"
            if p.exists():
                out.append(f"--- {name}.log\n{p.read_text(errors='replace')[-2000:]}")
        return "\n".join(out)

    def stop(self, job_ids: list[str] | None = None) -> None:
        """Stop our nodes (worker first) by process group, then stragglers by our markers."""
        for p in reversed(self.procs):
            _kill_group(p)
        time.sleep(1.0)
        kill_matching([str(self.root), *[f"--job-id {j}" for j in job_ids or []]])


@dataclass
class MlflowProcess(MlflowServer):
    """An ``entrypoint.sh mlflow`` process and its environment."""

    env: dict[str, str] = field(default_factory=dict)

    def wait_healthy(self, timeout_s: float = 120.0) -> MlflowProcess:
        """Wait until the role's healthcheck (``/health``) passes."""
        wait_healthy("mlflow", self.env, self.proc, timeout_s, self.log_tail)
        return self


def start_mlflow(root: Path) -> MlflowProcess:
    """Start ``entrypoint.sh mlflow`` on loopback (SQLite store, proxied artifacts under ``root``).

    Call :meth:`MlflowProcess.wait_healthy` next, and ``stop()`` in any case.
    """
    port = free_port()
    env = base_env(MLFLOW_BACKEND_STORE_URI=f"sqlite:///{root / 'mlflow.db'}",
                   MLFLOW_ARTIFACTS_DESTINATION=str(root / "artifacts"), MLFLOW_HOST="127.0.0.1",
                   MLFLOW_PORT=str(port), MLFLOW_WORKERS="1")
    log_path = root / "server.log"
    proc = start_role("mlflow", env, log_path, cwd=root)
    return MlflowProcess(f"http://127.0.0.1:{port}", proc, log_path, env)


def short_tmp(prefix: str) -> Path:
    """A fresh, short temp directory (Unix socket paths under it must stay short)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@dataclass
class Service:
    """``entrypoint.sh api`` (``sedtune serve``) as a subprocess.

    Attributes:
        url: Base URL.
        env: Its environment (settings in ``SEDTUNE_*``).
        log_path: Its log file.
        port: Its port (``SEDTUNE_PORT``).
        proc: The process (None when stopped).
    """

    url: str
    env: dict[str, str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> Service:
        """Start and wait until the healthcheck (``/health``) passes."""
        env = {**self.env, "SEDTUNE_HOST": "127.0.0.1", "SEDTUNE_PORT": str(self.port)}
        self.proc = start_role("api", env, self.log_path)
        wait_healthy("api", env, self.proc, timeout_s, self.log_tail)
        return self

    def kill(self) -> None:
        """SIGKILL (a crash: no shutdown handlers run)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL."""
        if self.proc is not None:
            _kill_group(self.proc)
            self.proc = None

    def log_tail(self) -> str:
        """The end of the service log."""
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""
