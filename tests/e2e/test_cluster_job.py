"""A tuning job on a real 2-node Ray cluster: work lands on both nodes, worker deaths are survived.

The cluster is ``ray.cluster_utils.Cluster``: two raylets (head and worker node, 1 CPU each)
on loopback, each with its own worker processes. Every strategy's workers read the shards
themselves (they get only a DataRef); the test checks each searching strategy's work ran on
both nodes, and that SIGKILLing worker processes of the job mid-run does not fail it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import psutil
import pytest

TAG = f"sedtune-e2e-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    # The tag marks this job's worker processes, so the test kills only its own workers.
    ray.init(address=c.address, runtime_env={"env_vars": {"SEDTUNE_E2E_TAG": TAG}}, log_to_driver=False)
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from envs.synth import generate
    from envs.synth_config import SynthConfig

    out = tmp_path_factory.mktemp("cluster-data")
    return generate(str(out), SynthConfig(n_clips=240, n_classes=3, seed=1, clips_per_shard=60))


def _spec(dataset, out, strategies):
    from service.tuning.spec import parse_spec

    return parse_spec(
        {
            "name": "cluster",
            "data": {
                "scores": dataset.scores_uri,
                "ground_truth": dataset.ground_truth_path,
                "durations": dataset.durations_path,
            },
            "space": {
                "kernels": [1, 3, 5, 7],
                "threshold": {"low": 0.05, "high": 0.95},
                "boxes": {"step_filter_s": [0.32], "merge": [{"abs": 0.2}]},
            },
            "strategies": strategies,
            "folds": 3,
            "tracking": {"enabled": False},
            "output": str(out),
        }
    )


def _rl_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("service.strategies.rl") is not None


_DRIVER = """
import json, sys
from service.tuning.runner import run_job
from service.tuning.spec import parse_spec
spec = parse_spec(json.loads(sys.argv[2]))
result = run_job(spec, address=sys.argv[1])
print("NODES " + json.dumps({k: v[0].info.get("nodes", []) for k, v in result.results.items()}))
"""


def test_work_lands_on_both_nodes(cluster, dataset, tmp_path):
    import json
    import subprocess
    import sys

    import ray

    strategies = [
        {"name": "manual"},
        {"name": "exact", "budget": 40},
        # A fresh worker per trial: the first two start together, one per 1-CPU node (with
        # reused workers, one node's worker could finish every trial before the other's is up).
        {"name": "random", "budget": 12, "options": {"max_concurrent_trials": 2, "reuse_actors": False}},
    ]
    if _rl_available():
        strategies.append(
            {"name": "rl", "budget": 4, "options": {"num_env_runners": 2, "num_cpus_per_env_runner": 1}}
        )
    spec = _spec(dataset, tmp_path / "out", strategies)
    # The job runs in its own driver process attached to the cluster, as `sedtune tune
    # --address` does for a user (the test process's earlier Ray sessions stay out of it).
    proc = subprocess.run(
        [sys.executable, "-c", _DRIVER, cluster.address, json.dumps(spec.model_dump(mode="json"))],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("NODES "))
    used_by = json.loads(line[len("NODES "):])
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    for name in ("exact", "random") + (("rl",) if _rl_available() else ()):
        assert set(used_by[name]) == nodes, (name, used_by[name], nodes)


def _job_workers() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["name"]):
        try:
            if not (p.info["name"] or "").startswith("ray::"):
                continue
            if p.environ().get("SEDTUNE_E2E_TAG") == TAG and "IDLE" not in (p.info["name"] or ""):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def test_killed_workers_do_not_fail_the_job(cluster, dataset, tmp_path):
    from service.tuning.runner import run_job

    strategies = [
        {"name": "manual"},
        {"name": "exact", "budget": 40},
        {"name": "random", "budget": 10, "options": {"max_concurrent_trials": 2}},
    ]
    spec = _spec(dataset, tmp_path / "out", strategies)
    outcome: dict = {}
    killed: list[str] = []

    def job() -> None:
        try:
            outcome["result"] = run_job(spec, address=cluster.address)
        except BaseException as e:  # the test reports it below
            outcome["error"] = e

    t = threading.Thread(target=job)
    t.start()
    deadline = time.time() + 120
    seen: set[str] = set()
    # Kill one busy worker of each kind we meet (an exact task, a Tune trial), once each.
    while t.is_alive() and time.time() < deadline and len(killed) < 2:
        for p in _job_workers():
            kind = "trial" if "ImplicitFunc" in p.name() or "trainable" in p.name().lower() else p.name()
            if kind in seen or kind.startswith("ray::IDLE"):
                continue
            try:
                os.kill(p.pid, signal.SIGKILL)
                seen.add(kind)
                killed.append(p.name())
            except ProcessLookupError:
                continue
            break
        time.sleep(0.3)
    t.join(timeout=300)
    assert not t.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert killed, "no worker of the job was found to kill"
    result = outcome["result"]
    assert {r.strategy for r in result.rows} >= {"manual", "exact", "random"}
    assert result.results["random"][0].evaluations == 10
