"""docker-compose.yml: a compose implementation accepts it, and it wires the stack as deployed.

``docker-compose config`` (Debian's docker-compose 1.29, which validates against the Compose
Specification) runs in a copy of the project with the example env files in place of the real ones.
The structural checks parse the file: pinned images, healthchecks and healthy dependencies, only
the API and UIs published and only on 127.0.0.1, and every sedtune service runs a role of
deploy/entrypoint.sh with variables that the script or sedtune reads (each role's command is
dry-run with the service's environment).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy_entrypoint import IMAGE_SCRIPT, ROLES, allowed_env, clean_env, dry_run

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
PUBLISHED = {"sedtune-api": {8000}, "mlflow": {5000}, "ray-head": {8265}, "minio": {9001}}  # API and UIs
THIRD_PARTY = ("postgres:", "quay.io/minio/minio:", "quay.io/minio/mc:")


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def env_files(service: dict[str, Any]) -> list[str]:
    files = service.get("env_file", [])
    return [files] if isinstance(files, str) else list(files)


def read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value
    return out


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """The service's environment as compose gives it, with the example env files."""
    env: dict[str, str] = {}
    for f in env_files(service):
        env.update(read_env_file(ROOT / f"{f}.example"))
    env.update({k: str(v) for k, v in (service.get("environment") or {}).items()})
    return env


def is_project(service: dict[str, Any]) -> bool:
    return "build" in service


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("docker-compose is not on PATH: install it (apt-get install -y docker-compose) to "
                    "validate docker-compose.yml")
    # a copy of the project with the example env files (docker-compose refuses missing env files)
    (tmp_path / "deploy").mkdir()
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    for service in compose()["services"].values():
        for f in env_files(service):
            shutil.copy(ROOT / f"{f}.example", tmp_path / f)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    for profile in ([], ["--profile", "s3"]):
        p = subprocess.run([exe, *profile, "-f", "docker-compose.yml", "config", "-q"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"docker-compose config {profile}: {p.stderr}"
    p = subprocess.run([exe, "-f", "docker-compose.yml", "config", "--services"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert set(p.stdout.split()) == set(compose()["services"])


def test_images_are_the_project_build_or_pinned() -> None:
    images = set()
    for name, s in compose()["services"].items():
        if is_project(s):
            assert s["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile"}, name
            images.add(s["image"])
        else:
            assert s["image"].startswith(THIRD_PARTY), name
            assert re.search(r":[\w.-]+@sha256:[0-9a-f]{64}$", s["image"]), f"{name}: pin tag and digest"
    assert len(images) == 1 and not images.pop().endswith(":latest")  # one project image


def test_healthchecks_and_healthy_dependencies() -> None:
    services = compose()["services"]
    for name, s in services.items():
        one_shot = s.get("restart") == "no"
        if not one_shot:
            assert s.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        deps = s.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, cond in deps.items():
            one_shot_dep = services[dep].get("restart") == "no"
            want = "service_completed_successfully" if one_shot_dep else "service_healthy"
            assert cond == {"condition": want}, f"{name} -> {dep}"
    order = {"postgres": [], "mlflow": ["postgres"], "ray-head": ["mlflow"], "ray-worker": ["ray-head"],
             "sedtune-api": ["postgres", "mlflow", "ray-head"]}
    for name, deps in order.items():
        assert sorted(services[name].get("depends_on", {})) == sorted(deps), name


def test_only_the_api_and_uis_are_published_and_only_on_loopback() -> None:
    for name, s in compose()["services"].items():
        ports = s.get("ports", [])
        assert not ports or name in PUBLISHED, f"{name} must not be published"
        published = set()
        for p in ports:
            host_ip, _, container_port = str(p).split(":")
            assert host_ip == "127.0.0.1", f"{name}: {p}"
            published.add(int(container_port))
        if name in PUBLISHED:
            assert published == PUBLISHED[name], name
    assert "ports" not in compose()["services"]["postgres"]


def test_sedtune_services_run_entrypoint_roles_with_variables_it_reads(tmp_path: Path) -> None:
    allowed = allowed_env() | {"RAY_AUTH_TOKEN"}
    roles = {}
    for name, s in compose()["services"].items():
        if not is_project(s):
            continue
        assert "entrypoint" not in s, f"{name}: the image's ENTRYPOINT (deploy/entrypoint.sh) must run"
        role = s["command"][0]
        assert role in ROLES - {"job"}, f"{name}: {s['command']}"
        roles[name] = role
        assert s["healthcheck"]["test"] == ["CMD", IMAGE_SCRIPT, "healthcheck", role], name
        env = service_env(s)
        assert set(s.get("environment", {})) | set(env) <= allowed, f"{name}: {set(env) - allowed}"
        r = dry_run(clean_env(tmp_path, **env), *s["command"])
        assert r.returncode == 0, f"{name}: {r.stderr}"
        if role != "mlflow":  # every Ray node and client: token auth, from the env file's token
            assert r.env["RAY_AUTH_MODE"] == "token", name
    assert roles == {"mlflow": "mlflow", "ray-head": "ray-head", "ray-worker": "ray-worker",
                     "sedtune-api": "api"}


def test_services_agree_on_addresses_ports_and_paths(tmp_path: Path) -> None:
    s = compose()["services"]
    env = {name: service_env(s[name]) for name in ("mlflow", "ray-head", "ray-worker", "sedtune-api")}
    flags, argv = {}, {}
    for name in env:
        argv[name] = dry_run(clean_env(tmp_path, **env[name]), *s[name]["command"]).argv
        flags[name] = dict(a.split("=", 1) for a in argv[name] if a.startswith("--") and "=" in a)
    head, mlflow, api = flags["ray-head"], flags["mlflow"], flags["sedtune-api"]
    assert head["--dashboard-host"] == mlflow["--host"] == api["--host"] == "0.0.0.0"
    assert flags["ray-worker"]["--address"] == f"ray-head:{head['--port']}"
    assert env["sedtune-api"]["SEDTUNE_RAY_ADDRESS"] == f"http://ray-head:{head['--dashboard-port']}"
    tracking = f"http://mlflow:{mlflow['--port']}"
    assert env["sedtune-api"]["SEDTUNE_TRACKING_URI"] == tracking
    assert env["ray-head"]["MLFLOW_TRACKING_URI"] == env["ray-worker"]["MLFLOW_TRACKING_URI"] == tracking
    assert "mlflow:" + mlflow["--port"] in mlflow["--allowed-hosts"].split(",")
    assert mlflow["--backend-store-uri"].startswith("postgresql+psycopg://")
    assert "--serve-artifacts" in argv["mlflow"]  # workers upload through the server: no bucket keys
    for name, port in (("sedtune-api", api["--port"]), ("mlflow", mlflow["--port"]),
                       ("ray-head", head["--dashboard-port"])):
        assert [str(p).split(":")[2] for p in s[name]["ports"]] == [port], name
    # data and outputs at the same paths in the API and on every Ray node (the service reads results)
    mounts = {name: {v.split(":")[1]: v.split(":")[0] for v in s[name]["volumes"]}
              for name in ("ray-head", "ray-worker", "sedtune-api")}
    for root in ("SEDTUNE_DATA_ROOTS", "SEDTUNE_OUTPUT_ROOTS"):
        path = env["sedtune-api"][root]
        assert len({m.get(path) for m in mounts.values()}) == 1 and mounts["ray-head"][path], root
    assert all("shm_size" in s[n] for n in ("ray-head", "ray-worker"))
    assert s["postgres"]["environment"]["SEDTUNE_EXTRA_DATABASES"] in env["sedtune-api"]["SEDTUNE_DB_URL"]
    mlflow_db = s["postgres"]["environment"]["POSTGRES_DB"]
    assert env["mlflow"]["MLFLOW_BACKEND_STORE_URI"].endswith(f"/{mlflow_db}")


def test_env_files_have_examples_and_stay_out_of_git() -> None:
    files = {f for s in compose()["services"].values() for f in env_files(s)}
    assert files == {"deploy/sedtune.env", "deploy/stores.env"}
    assert "*.env" in (ROOT / "deploy" / ".gitignore").read_text().split()
    used = set()
    for s in compose()["services"].values():
        used |= set(service_env(s))
    for f in files:
        example = read_env_file(ROOT / f"{f}.example")
        secret = [v for k, v in example.items() if "TOKEN" in k or "PASSWORD" in k]
        assert secret and all("change-me" in v for v in secret)
        assert set(example) <= used
    volumes = set(compose()["volumes"])
    for name, s in compose()["services"].items():
        for v in s.get("volumes", []):
            src = v.split(":")[0]
            assert src in volumes or (ROOT / src).exists(), f"{name}: {v}"
