"""Interrupting ``sedtune tune`` and the Ray job process: never a finished-looking partial result.

Real processes, real signals. ``sedtune tune`` is sent SIGINT at seeded random points of 20
runs, spread over its phases: start-up and validation, local Ray starting, exact, random and
bayes under Ray Tune (whose own SIGINT handler would end the experiment "gracefully" and
return partial trials), and writing the results. Every run must exit 130 with one line, leave
no ``best_params.json`` or ``comparison.json`` anywhere, and leave the user's old output folder
(``--force`` was given) exactly as it was. The Ray job process (``python -m service.jobrun``)
gets SIGTERM mid-strategy: status ``interrupted``, exit 143, no results.

Time: one generated set and one 2-CPU Ray cluster (``ray.cluster_utils.Cluster``) for the
module; all but the Ray-start phases attach to it with ``--address``, so a run costs seconds.
"""

from __future__ import annotations

import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ray

SEED = 14
RUNS = 20
PHASES = ("startup", "ray_start", "exact", "random", "bayes", "writing")
INTERRUPTED = "sedtune: interrupted (SIGINT); no results written"


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A 2-CPU Ray cluster on this machine (its own processes); yields its address."""
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    yield str(c.address)
    c.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from envs.synth import generate
    from envs.synth_config import SynthConfig

    res = generate(str(tmp_path_factory.mktemp("interrupt") / "data"), SynthConfig(n_clips=40, n_classes=2))
    return {"scores": res.scores_uri, "ground_truth": res.ground_truth_path, "durations": res.durations_path}


def _spec(data: dict[str, str], strategies: list[dict[str, object]], output: Path) -> dict[str, object]:
    return {
        "name": "interrupt",
        "data": data,
        "space": {"decoders": ["frames"], "kernels": [1, 5]},  # 2 settings
        "strategies": [{"name": "manual"}, *strategies],
        "folds": 2,
        "bootstrap": 100,
        "output": str(output),
        "tracking": {"enabled": False},
    }


EXACT = {"name": "exact", "budget": 10}
STRATEGIES: dict[str, list[dict[str, object]]] = {
    "startup": [EXACT],
    "ray_start": [EXACT],
    "exact": [EXACT],
    # Work after the Tune strategy, so that the interrupt lands before the results either way.
    "random": [{"name": "random", "budget": 8}, EXACT],
    "bayes": [{"name": "bayes", "budget": 6}, EXACT],
    "writing": [EXACT],
}


@dataclass
class Run:
    proc: subprocess.Popen[bytes]
    root: Path
    out: Path
    stderr: Path

    def err(self) -> str:
        return self.stderr.read_text(errors="replace")

    def staging(self) -> list[str]:
        return glob.glob(str(self.root / ".out.sedtune-staging-*"))


def _start(root: Path, spec: dict[str, object], address: str | None, force: bool = True) -> Run:
    root.mkdir(exist_ok=True)
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    args = [sys.executable, "-m", "service.cli", "-v", "tune", str(path), "--no-tracking"]
    args += ["--address", address] if address else []
    args += ["--force"] if force else []
    stderr = root / "stderr.txt"
    # A run that hangs after its signal is aborted by _exit_code with faulthandler's stacks.
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    with open(stderr, "wb") as f:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=f, cwd=root, env=env)
    return Run(proc, root, Path(str(spec["output"])), stderr)


def _exit_code(run: Run, where: str, timeout_s: float = 120.0) -> int:
    """The run's exit code; a run still going after ``timeout_s`` fails the test with its stacks."""
    try:
        return run.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        run.proc.send_signal(signal.SIGABRT)  # faulthandler prints every thread's stack
        try:
            run.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            run.proc.kill()
            run.proc.wait()
        pytest.fail(f"{where}: still running {timeout_s:.0f} s after its signal:\n{run.err()[-6000:]}")


def _until(run: Run, seen: Callable[[], bool], deadline_s: float = 120.0) -> None:
    """Poll ``seen`` while the run goes on; fail if it ends first or the deadline passes."""
    end = time.monotonic() + deadline_s
    while not seen():
        try:
            run.proc.wait(timeout=0.02)
        except subprocess.TimeoutExpired:
            if time.monotonic() > end:
                pytest.fail(f"nothing seen within {deadline_s} s:\n{run.err()[-2000:]}")
            continue
        pytest.fail(f"the run ended (exit {run.proc.returncode}) too early:\n{run.err()[-2000:]}")


def _after(run: Run, delay_s: float) -> None:
    """Let the run go on for ``delay_s`` (a wait that returns early if it ends: a test failure)."""
    try:
        run.proc.wait(timeout=delay_s)
    except subprocess.TimeoutExpired:
        return
    pytest.fail(f"the run ended (exit {run.proc.returncode}) before its interrupt:\n{run.err()[-2000:]}")


def _reach(run: Run, phase: str, rng: random.Random) -> str:
    """Wait until ``phase`` is reached plus a seeded random delay within it; returns a description."""
    log = run.err
    if phase == "startup":  # imports, spec, validation (and perhaps the start of Ray)
        delay = rng.uniform(0.5, 1.6)
    elif phase == "ray_start":  # the staging folder: validated; local Ray starts (seconds here)
        _until(run, lambda: bool(run.staging()))
        delay = rng.uniform(0.0, 2.0)
    elif phase == "exact":
        _until(run, lambda: "running exact" in log())
        delay = rng.uniform(0.0, 0.4)
    elif phase == "random":
        _until(run, lambda: "random: 8 trials" in log())
        delay = rng.uniform(0.3, 3.0)
    elif phase == "bayes":
        _until(run, lambda: "bayes: 6 trials" in log())
        delay = rng.uniform(0.3, 2.0)
    else:  # writing: the first files of the results are in the staging folder
        _until(run, lambda: any(os.path.isdir(os.path.join(s, "params")) for s in run.staging()))
        delay = rng.uniform(0.0, 0.05)
    _after(run, delay)
    return f"{phase} + {delay:.2f} s"


def _files_named(root: Path, *names: str) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f in names]


def test_interrupted_tune_never_exits_0_nor_writes_results(
    cluster: str, data: dict[str, str], tmp_path: Path
) -> None:
    t0 = time.monotonic()
    # Control: the same harness on an uninterrupted run finds the files it looks for.
    control = tmp_path / "control"
    ok = _start(control, _spec(data, [EXACT], control / "out"), cluster, force=False)
    assert ok.proc.wait(timeout=300) == 0, ok.err()[-3000:]
    assert _files_named(ok.root, "best_params.json") and not ok.staging()

    rng = random.Random(SEED)
    order = list(PHASES * 3) + rng.sample(PHASES, RUNS - 3 * len(PHASES))
    rng.shuffle(order)
    outcomes = []
    for i, phase in enumerate(order):
        root = tmp_path / f"run{i:02d}"
        old = root / "out"
        spec = _spec(data, STRATEGIES[phase], old)
        local = phase in ("startup", "ray_start")  # these start a local Ray, as a user would
        old.mkdir(parents=True)  # the user's earlier results: --force replaces them only when complete
        (old / "mine.txt").write_text("keep me")
        run = _start(root, spec, None if local else cluster)
        where = _reach(run, phase, rng)
        run.proc.send_signal(signal.SIGINT)
        rc = _exit_code(run, f"run {i} ({where})")
        err = run.err()
        context = f"run {i} ({where}): exit {rc}\n{err[-3000:]}"
        assert rc == 130, context
        assert "Traceback" not in err, context
        # Before the command starts (its imports), nothing could have been written yet.
        assert (INTERRUPTED if phase != "startup" else "sedtune: interrupted (SIGINT)") in err, context
        assert _files_named(root, "best_params.json", "comparison.json") == [], context
        assert os.listdir(old) == ["mine.txt"] and (old / "mine.txt").read_text() == "keep me", context
        assert run.staging() == [], context  # an interrupt cleans up; only SIGKILL leaves it
        outcomes.append(where)
    print(f"{RUNS} interrupted runs in {time.monotonic() - t0:.0f} s: " + "; ".join(outcomes))
    assert sorted(set(o.split(" +")[0] for o in outcomes)) == sorted(PHASES)


def test_sigterm_stops_a_ray_job_with_status_interrupted(
    cluster: str, data: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "job"
    spec = _spec(data, [{"name": "random", "budget": 8}, EXACT], out)
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    env = {**os.environ, "RAY_ADDRESS": cluster}
    args = [sys.executable, "-m", "service.jobrun", "--job-id", "j-stop-1", "--spec-file", str(spec_file)]
    with open(tmp_path / "stderr.txt", "wb") as f:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=f, env=env, cwd=tmp_path)
    run = Run(proc, tmp_path, out, tmp_path / "stderr.txt")

    def status() -> dict[str, object]:
        try:
            return json.loads((out / "status.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return {}

    def random_running() -> bool:
        strategies = status().get("strategies") or {}
        return isinstance(strategies, dict) and strategies.get("random", {}).get("state") == "running"

    _until(run, random_running)
    _after(run, 1.0)
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
    doc = status()
    context = f"exit {rc}, status {doc}\n{run.err()[-3000:]}"
    assert rc == 143, context
    assert doc["state"] == "interrupted", context
    assert "SIGTERM" in str(doc["error"]) and "no results written" in str(doc["error"]), context
    assert doc["strategies"]["random"]["state"] == "interrupted", context  # type: ignore[index]
    assert doc["recommended"] is None, context
    assert _files_named(out, "best_params.json", "comparison.json") == [], context
    assert glob.glob(str(out / ".sedtune-results-*")) == [], context
    assert "interrupted (SIGTERM)" in run.err(), context
