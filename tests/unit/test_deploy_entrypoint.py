"""deploy/entrypoint.sh, the one script that starts every sedtune process (image, compose, k8s, e2e).

The commands are checked through the script's dry run (``SEDTUNE_ENTRYPOINT_DRY_RUN=1`` prints
what it would exec, after exactly the same steps), the health probes against a small HTTP server
on loopback, and the e2e support module is checked to start every role through this script.
The helpers at the top (roles, variables the script reads, dry runs) are shared by the other
``test_deploy_*`` modules.
"""

from __future__ import annotations

import ast
import http.server
import os
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from service.server.settings import _ENV as SETTINGS_ENV

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "entrypoint.sh"
IMAGE_SCRIPT = "/opt/sedtune/deploy/entrypoint.sh"  # where deploy/Dockerfile puts it
ROLES = {"ray-head", "ray-worker", "mlflow", "api", "job"}
SERVER_ROLES = ROLES - {"job"}

# Variables a deployment may set that the script does not read, and who reads them.
EXTERNAL_ENV = {
    "MLFLOW_TRACKING_URI": "the MLflow client in jobs (tracking.uri default)",
    "POSTGRES_PASSWORD": "composes the database URLs (k8s $(POSTGRES_PASSWORD), the postgres image)",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "Ray",
    "PYTHONUNBUFFERED": "Python",
    "PATH": "the shell",
    "SEDTUNE_SERVER": "the sedtune CLI client",
    "SEDTUNE_TOKEN": "the sedtune CLI client",
}


def script_roles() -> set[str]:
    """The roles the script declares (``ROLES=``) and dispatches (``ROLE) role_...``); must agree."""
    text = SCRIPT.read_text()
    m = re.search(r'^ROLES="([^"]*)"', text, re.M)
    assert m, "entrypoint.sh: no ROLES= line"
    dispatch = text[text.rindex("\ncase $role in"):]
    dispatched = set(re.findall(r"^\s+([a-z][a-z-]*)\) role_", dispatch, re.M))
    assert set(m.group(1).split()) == dispatched, (m.group(1), dispatched)
    return dispatched


def script_variables() -> set[str]:
    """Every environment variable the script reads: ``$X``, ``${X...}``, and ``X:--flag`` tables."""
    text = "\n".join(line for line in SCRIPT.read_text().splitlines() if not line.lstrip().startswith("#"))
    names = set(re.findall(r"\$\{!?([A-Z][A-Z0-9_]*)", text))
    names |= set(re.findall(r"\$([A-Z][A-Z0-9_]*)", text))
    names |= set(re.findall(r"\b([A-Z][A-Z0-9_]*):--[a-z]", text))
    return names


def allowed_env() -> set[str]:
    """Names a deployment may set on a container of the project image."""
    return script_variables() | set(SETTINGS_ENV.values()) | set(EXTERNAL_ENV)


@dataclass
class DryRun:
    """What the script would run."""

    returncode: int
    argv: list[str]
    env: dict[str, str]
    stderr: str


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """A minimal environment: no variable of a developer's shell reaches the script."""
    return {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", **extra}


def dry_run(env: dict[str, str], *args: str) -> DryRun:
    """``SEDTUNE_ENTRYPOINT_DRY_RUN=1 bash deploy/entrypoint.sh ARGS`` in ``env``."""
    p = subprocess.run(["bash", str(SCRIPT), *args], env={**env, "SEDTUNE_ENTRYPOINT_DRY_RUN": "1"},
                       capture_output=True, text=True, timeout=30)
    argv = [ln[4:] for ln in p.stdout.splitlines() if ln.startswith("arg ")]
    envs = dict(ln[4:].split("=", 1) for ln in p.stdout.splitlines() if ln.startswith("env "))
    return DryRun(p.returncode, argv, envs, p.stderr)


# ---------------------------------------------------------------------------------------- the script


def test_the_script_declares_exactly_the_deployment_roles() -> None:
    assert script_roles() == ROLES
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    assert os.access(SCRIPT, os.X_OK), "deploy/entrypoint.sh must be executable"


def test_ray_head_command_comes_from_the_environment(tmp_path: Path) -> None:
    env = clean_env(tmp_path, RAY_AUTH_MODE="disabled")
    r = dry_run(env, "ray-head")
    assert r.returncode == 0, r.stderr
    assert r.argv == ["ray", "start", "--head", "--block", "--disable-usage-stats",
                      "--include-dashboard=true", "--port=6379", "--dashboard-host=0.0.0.0",
                      "--dashboard-port=8265", "--ray-client-server-port=10001",
                      "--dashboard-agent-listen-port=52365"]
    knobs = {"RAY_GCS_PORT": "7000", "RAY_DASHBOARD_HOST": "127.0.0.1", "RAY_DASHBOARD_PORT": "7001",
             "RAY_CLIENT_SERVER_PORT": "7002", "RAY_NODE_IP": "127.0.0.1", "RAY_NUM_CPUS": "2",
             "RAY_NUM_GPUS": "0", "RAY_OBJECT_STORE_MEMORY": "157286400", "RAY_TEMP_DIR": str(tmp_path / "r"),
             "RAY_NODE_MANAGER_PORT": "7003", "RAY_OBJECT_MANAGER_PORT": "7004",
             "RAY_DASHBOARD_AGENT_LISTEN_PORT": "7005", "RAY_DASHBOARD_AGENT_GRPC_PORT": "7006",
             "RAY_RUNTIME_ENV_AGENT_PORT": "7007", "RAY_METRICS_EXPORT_PORT": "7008",
             "RAY_MIN_WORKER_PORT": "0", "RAY_MAX_WORKER_PORT": "0"}
    r = dry_run({**env, **knobs}, "ray-head", "--labels={}")
    assert r.returncode == 0, r.stderr
    assert r.argv[:4] == ["ray", "start", "--head", "--block"]
    flags = dict(a.split("=", 1) for a in r.argv if a.startswith("--") and "=" in a)
    assert flags == {
        "--include-dashboard": "true", "--port": "7000", "--dashboard-host": "127.0.0.1",
        "--dashboard-port": "7001", "--ray-client-server-port": "7002", "--node-ip-address": "127.0.0.1",
        "--num-cpus": "2", "--num-gpus": "0", "--object-store-memory": "157286400",
        "--temp-dir": str(tmp_path / "r"), "--node-manager-port": "7003", "--object-manager-port": "7004",
        "--dashboard-agent-listen-port": "7005", "--dashboard-agent-grpc-port": "7006",
        "--runtime-env-agent-port": "7007", "--metrics-export-port": "7008", "--min-worker-port": "0",
        "--max-worker-port": "0", "--labels": "{}"}
    assert r.argv[-1] == "--labels={}"  # extra arguments come last


def test_ray_worker_joins_the_head_address(tmp_path: Path) -> None:
    r = dry_run(clean_env(tmp_path, RAY_AUTH_MODE="disabled"), "ray-worker")
    assert r.argv == ["ray", "start", "--block", "--disable-usage-stats", "--address=ray-head:6379",
                      "--dashboard-agent-listen-port=52365"]
    r = dry_run(clean_env(tmp_path, RAY_AUTH_MODE="disabled", RAY_HEAD_ADDRESS="10.0.0.5:7000",
                          RAY_NUM_CPUS="3"), "ray-worker")
    assert "--address=10.0.0.5:7000" in r.argv and "--num-cpus=3" in r.argv
    assert "--head" not in r.argv and not any(a.startswith("--dashboard-port") for a in r.argv)


def test_under_kuberay_the_operators_ray_start_runs(tmp_path: Path) -> None:
    gen = "ray start --head --dashboard-host=0.0.0.0 --num-cpus=0 --metrics-export-port=8080"
    r = dry_run(clean_env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="t", KUBERAY_GEN_RAY_START_CMD=gen),
                "ray-head")
    assert r.returncode == 0, r.stderr
    assert r.argv[:2] == ["bash", "-c"] and r.argv[2].startswith(f"exec {gen} --block")
    assert r.env["RAY_AUTH_MODE"] == "token"
    r = dry_run(clean_env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="t",
                          KUBERAY_GEN_RAY_START_CMD="ray start --address=h:6379 --block"), "ray-worker")
    assert r.argv == ["bash", "-c", "exec ray start --address=h:6379 --block "]


def test_mlflow_serves_artifacts_from_its_backend_store(tmp_path: Path) -> None:
    r = dry_run(clean_env(tmp_path), "mlflow")
    assert r.returncode == 0, r.stderr
    assert r.argv == ["mlflow", "server", "--backend-store-uri=sqlite:////var/lib/sedtune/mlflow/mlflow.db",
                      "--serve-artifacts", "--artifacts-destination=/var/lib/sedtune/mlflow/artifacts",
                      "--host=0.0.0.0", "--port=5000", "--workers=2"]
    r = dry_run(clean_env(tmp_path, MLFLOW_BACKEND_STORE_URI="postgresql+psycopg://u:p@db/mlflow",
                          MLFLOW_ARTIFACTS_DESTINATION="s3://bucket/mlflow", MLFLOW_HOST="127.0.0.1",
                          MLFLOW_PORT="5055", MLFLOW_WORKERS="1", MLFLOW_SERVER_ALLOWED_HOSTS="mlflow:5055"),
                "mlflow")
    assert r.argv == ["mlflow", "server", "--backend-store-uri=postgresql+psycopg://u:p@db/mlflow",
                      "--serve-artifacts", "--artifacts-destination=s3://bucket/mlflow", "--host=127.0.0.1",
                      "--port=5055", "--workers=1", "--allowed-hosts=mlflow:5055"]


def test_api_serves_on_its_host_and_port(tmp_path: Path) -> None:
    r = dry_run(clean_env(tmp_path, RAY_AUTH_TOKEN="t"), "api")
    assert r.argv == ["sedtune", "-v", "serve", "--host=0.0.0.0", "--port=8000"]
    r = dry_run(clean_env(tmp_path, RAY_AUTH_TOKEN="t", SEDTUNE_HOST="127.0.0.1", SEDTUNE_PORT="9000",
                          SEDTUNE_CONFIG="/etc/sedtune/sedtune.yaml", SEDTUNE_VERBOSE="0"), "api")
    assert r.argv == ["sedtune", "serve", "--host=127.0.0.1", "--port=9000",
                      "--config=/etc/sedtune/sedtune.yaml"]


def test_job_runs_a_spec_or_the_services_entrypoint(tmp_path: Path) -> None:
    env = clean_env(tmp_path, RAY_AUTH_TOKEN="t")
    r = dry_run(env, "job", "/specs/job.yaml", "--no-tracking")
    assert r.argv == ["sedtune", "tune", "/specs/job.yaml", "--address=auto", "--no-tracking"]
    r = dry_run({**env, "RAY_ADDRESS": "10.0.0.5:6379", "SEDTUNE_JOB_OUTPUT_ROOT": "/results/nightly"},
                "job", "/specs/nightly.yaml")
    assert r.argv[:4] == ["sedtune", "tune", "/specs/nightly.yaml", "--address=10.0.0.5:6379"]
    assert re.fullmatch(r"--output=/results/nightly/\d{8}T\d{6}Z", r.argv[4])
    r = dry_run(env, "job", "--job-id", "j-0123456789abcdef", "--spec-b64", "e30=")
    assert r.argv == ["python", "-m", "service.jobrun", "--job-id", "j-0123456789abcdef",
                      "--spec-b64", "e30="]
    r = dry_run(env, "job")
    assert r.returncode == 2 and "give a spec file" in r.stderr


@pytest.mark.parametrize("role", ["ray-head", "ray-worker", "api", "job"])
def test_ray_auth_mode_is_always_explicit(tmp_path: Path, role: str) -> None:
    args = [role, "/specs/x.yaml"] if role == "job" else [role]
    env = clean_env(tmp_path)
    r = dry_run(env, *args)
    assert r.returncode == 2 and "RAY_AUTH_MODE is not set" in r.stderr and r.argv == []
    assert dry_run({**env, "RAY_AUTH_TOKEN": "t"}, *args).env["RAY_AUTH_MODE"] == "token"
    token_file = tmp_path / "token"
    token_file.write_text("t")
    assert dry_run({**env, "RAY_AUTH_TOKEN_PATH": str(token_file)}, *args).env["RAY_AUTH_MODE"] == "token"
    assert dry_run({**env, "RAY_AUTH_MODE": "disabled"}, *args).env["RAY_AUTH_MODE"] == "disabled"
    r = dry_run({**env, "RAY_AUTH_MODE": "token"}, *args)  # no token anywhere (HOME has no ~/.ray)
    assert r.returncode == 2 and "no token" in r.stderr
    r = dry_run({**env, "RAY_AUTH_MODE": "Token"}, *args)
    assert r.returncode == 2 and "must be token or disabled" in r.stderr


def test_other_commands_pass_through_and_replace_the_script(tmp_path: Path) -> None:
    r = dry_run(clean_env(tmp_path), "mlflow")
    assert r.env["RAY_AUTH_MODE"] == ""  # MLflow is no Ray client: nothing required
    env = clean_env(tmp_path, RAY_AUTH_TOKEN="t")
    p = subprocess.Popen(["bash", str(SCRIPT), "sh", "-c", 'echo "$$ $RAY_AUTH_MODE"'], env=env,
                         stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=30)
    assert out.split() == [str(p.pid), "token"]  # exec'd: same PID, so a process group stops it
    p2 = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert p2.returncode == 2 and "usage" in p2.stderr


# ---------------------------------------------------------------------------------------- health


class _Handler(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[dict[str, str]] = {
        "/health": "OK", "/api/gcs_healthz": "success", "/api/local_raylet_healthz": "success"}

    def do_GET(self) -> None:
        body = self.bodies.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write((body or "no").encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def _health(env: dict[str, str], *args: str) -> int:
    return subprocess.run(["bash", str(SCRIPT), "healthcheck", *args], env=env, capture_output=True,
                          timeout=30).returncode


def test_healthcheck_probes_each_roles_endpoint(tmp_path: Path, http_port: int) -> None:
    port = str(http_port)
    env = clean_env(tmp_path)
    # each role reads its port from the same variables that start it; 0.0.0.0 is probed on loopback
    assert _health({**env, "RAY_DASHBOARD_PORT": port}, "ray-head") == 0
    worker = {**env, "RAY_DASHBOARD_AGENT_LISTEN_PORT": port, "RAY_NODE_IP": "10.9.9.9"}
    assert _health(worker, "ray-worker") == 0
    assert _health({**env, "MLFLOW_PORT": port, "MLFLOW_HOST": "0.0.0.0"}, "mlflow") == 0
    assert _health({**env, "SEDTUNE_PORT": port}, "api") == 0
    assert _health({**env, "SEDTUNE_PORT": port, "SEDTUNE_ROLE": "api"}) == 0  # role of the container
    init = tmp_path / "cmdline"  # or the role in PID 1's command line, as the image's HEALTHCHECK finds it
    init.write_bytes(b"\0".join([b"/usr/bin/tini", b"-g", b"--", IMAGE_SCRIPT.encode(), b"api", b""]))
    assert _health({**env, "SEDTUNE_PORT": port, "SEDTUNE_INIT_CMDLINE": str(init)}) == 0
    assert _health({**env, "SEDTUNE_PORT": "1", "SEDTUNE_INIT_CMDLINE": str(init)}) == 1
    assert _health(env, "job") == 0  # nothing to probe
    _Handler.bodies["/api/gcs_healthz"] = "failed"
    try:
        assert _health({**env, "RAY_DASHBOARD_PORT": port}, "ray-head") == 1  # 200 but not "success"
    finally:
        _Handler.bodies["/api/gcs_healthz"] = "success"
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = str(s.getsockname()[1])
    assert _health({**env, "SEDTUNE_PORT": closed}, "api") == 1


# ---------------------------------------------------------------------------------------- the e2e test


def _string_constants(tree: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def _env_keywords(tree: ast.AST) -> set[str]:
    """Environment variable names passed as keywords (base_env(X=...)) or used as dict keys."""
    names = {k.arg for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords if k.arg}
    names |= {k.value for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys
              if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return {n for n in names if re.fullmatch(r"[A-Z][A-Z0-9_]+", n)}


def test_e2e_starts_every_process_through_the_entrypoint() -> None:
    from tests.e2e import cluster_support

    assert cluster_support.ENTRYPOINT == SCRIPT
    assert cluster_support.role_cmd("api", "x") == ["bash", str(SCRIPT), "api", "x"]
    support = ast.parse((ROOT / "tests" / "e2e" / "cluster_support.py").read_text())
    e2e = ast.parse((ROOT / "tests" / "e2e" / "test_service_e2e.py").read_text())
    assert _string_constants(support) >= SERVER_ROLES, "the e2e support must start every server role"
    # ... and build none of their commands itself
    for tree in (support, e2e):
        built = _string_constants(tree) & {"start", "--head", "--block", "server", "serve",
                                           "--serve-artifacts"}
        assert not built, f"e2e builds commands the entrypoint owns: {built}"
    used = _env_keywords(support) | _env_keywords(e2e)
    assert used - allowed_env() == set(), "e2e sets variables nothing reads"
    assert used >= {"RAY_GCS_PORT", "RAY_DASHBOARD_PORT", "RAY_HEAD_ADDRESS", "RAY_TEMP_DIR", "MLFLOW_PORT",
                    "MLFLOW_BACKEND_STORE_URI", "MLFLOW_ARTIFACTS_DESTINATION", "SEDTUNE_PORT",
                    "RAY_AUTH_MODE"}
