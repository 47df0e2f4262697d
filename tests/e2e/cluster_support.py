"""Test support: a real 2-node Ray cluster and ``sedtune serve`` on loopback, torn down by PID.

Every process is started here with ``RAY_AUTH_MODE=disabled``, its own ports and its own temp
directory, in its own process group, and stopped by that group (``ray stop`` would stop every
Ray on the machine, other people's too). Ray workers and job drivers that left the group are
found by our unique temp directory or job ids in their command lines and killed by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from tests.integration.mlflow_support import free_port

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
SEDTUNE = str(BIN / "sedtune")


def base_env(**extra: str) -> dict[str, str]:
    """The environment of every process we start: loopback Ray without token auth, our venv first."""
    env = dict(os.environ)
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", RAY_DISABLE_DOCKER_CPU_WARNING="1",
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


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
        procs: The ``ray start --block`` processes (head first).
    """

    root: Path
    gcs_port: int = 0
    dashboard_port: int = 0
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def dashboard_url(self) -> str:
        """The Jobs API address."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start_node(self, name: str, args: list[str], cpus: int) -> None:
        tmp = self.root / name
        tmp.mkdir(parents=True, exist_ok=True)
        ports = {
            "--node-manager-port": free_port(), "--object-manager-port": free_port(),
            "--dashboard-agent-listen-port": free_port(), "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(), "--metrics-export-port": free_port(),
        }
        cmd = [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus),
               "--temp-dir", str(tmp), "--object-store-memory", str(150 * 1024 * 1024),
               "--disable-usage-stats", *args]
        for k, v in ports.items():
            cmd += [k, str(v)]
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115  (closed with the process)
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=base_env(),
                                           cwd=self.root, start_new_session=True))

    def start(self, timeout_s: float = 120.0) -> RayCluster:
        """Start the head (2 CPUs) and a worker (1 CPU); wait until both nodes are alive."""
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self._start_node("h", ["--head", "--port", str(self.gcs_port), "--dashboard-host", "127.0.0.1",
                               "--dashboard-port", str(self.dashboard_port),
                               "--ray-client-server-port", str(free_port()),
                               "--min-worker-port", "0", "--max-worker-port", "0"], 2)
        self._wait_dashboard(timeout_s)
        self._start_node("w", ["--address", f"127.0.0.1:{self.gcs_port}",
                               "--min-worker-port", "0", "--max-worker-port", "0"], 1)
        self._wait_nodes(2, timeout_s)
        return self

    def _check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"ray start exited ({p.returncode}):\n{self.log_tail()}")

    def _wait_dashboard(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if requests.get(f"{self.dashboard_url}/api/version", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the Ray dashboard did not answer within {timeout_s} s:\n{self.log_tail()}")

    def _wait_nodes(self, n: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        alive = 0
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                r = requests.get(f"{self.dashboard_url}/nodes?view=summary", timeout=5)
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


def short_tmp(prefix: str) -> Path:
    """A fresh, short temp directory (Unix socket paths under it must stay short)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@dataclass
class Service:
    """A ``sedtune serve`` subprocess.

    Attributes:
        url: Base URL.
        env: Its environment (settings in ``SEDTUNE_*``).
        log_path: Its log file.
        proc: The process (None when stopped).
    """

    url: str
    env: dict[str, str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> Service:
        """Start and wait until ``/health`` answers."""
        log = open(self.log_path, "ab")  # noqa: SIM115  (closed with the process)
        cmd = [SEDTUNE, "-v", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sedtune serve exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"sedtune serve did not answer within {timeout_s} s:\n{self.log_tail()}")

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
