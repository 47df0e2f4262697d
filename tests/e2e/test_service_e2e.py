"""End to end on loopback: a real 2-node Ray cluster, a real ``mlflow server`` and ``sedtune serve``.

One module-scoped stack serves four tests, in order:

1. a job submitted by the CLI and one by HTTP both reach SUCCEEDED through the Ray Jobs API;
   their results are fetched through the API and their runs are found in MLflow (REST);
2. a schedule ``* * * * *`` fires by cron and by ``run now``: two runs, the second warm-started
   from the first with drift reported, and a fire while a run is going is skipped and recorded;
3. ``sedtune serve`` is killed (SIGKILL) in the middle of a job and restarted after Ray has
   finished it: the job and the schedule are still there and the job's final state is
   reconciled from Ray; meanwhile ``sedtune submit --ray-address`` runs a job without the service;
4. a cancelled job is STOPPED on Ray;
5. a ~140 KB spec (its spec reaches Ray in a file, not on the command line) of a job named
   ``mlflow.db`` succeeds and is tracked, and the same submission sent twice with one
   ``Idempotency-Key`` is one job (issue 14);
6. a schedule whose data folder became a symlink out of the data roots refuses to fire, and the
   same spec submitted directly gets 422 (issue 14).

Every process is started here through ``deploy/entrypoint.sh ROLE``, the script the image,
docker-compose.yml and the Kubernetes manifests run (Ray token auth on, own ports, own temp
directories; see :mod:`tests.e2e.cluster_support`), and stopped by PID / process group, never with
``ray stop``.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.e2e.cluster_support import (
    SEDTUNE,
    RayCluster,
    Service,
    base_env,
    ray_headers,
    short_tmp,
    start_mlflow,
)
from tests.integration.mlflow_support import MlflowServer, Rest, tags
from tests.ports import free_port

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOKEN = "e2e-token-4d1f"
FINAL = ("SUCCEEDED", "FAILED", "STOPPED")
JOB_TIMEOUT_S = 150.0


@dataclass
class Stack:
    """Everything the tests talk to."""

    root: Path
    cluster: RayCluster
    mlflow: MlflowServer
    service: Service
    data: Path
    started_jobs: list[str]

    @property
    def url(self) -> str:
        return self.service.url

    def api(self, method: str, path: str, **kw: Any) -> requests.Response:
        return requests.request(method, self.url + path, headers={"Authorization": f"Bearer {TOKEN}"},
                                timeout=30, **kw)

    def spec(self, name: str, bayes: bool = False) -> dict[str, Any]:
        strategies: list[dict[str, Any]] = [
            {"name": "manual"}, {"name": "exact"},
            {"name": "random", "budget": 3, "options": {"max_concurrent_trials": 1}},
        ]
        if bayes:
            strategies.append({"name": "bayes", "budget": 3, "options": {"n_startup_trials": 2}})
        return {
            "name": name,
            "data": {"scores": str(self.data / "scores"), "ground_truth": str(self.data / "ground_truth.tsv"),
                     "durations": str(self.data / "durations.tsv")},
            "space": {"kernels": [1, 3, 5, 7], "threshold_step": 0.1,
                      "boxes": {"step_filter_s": [0.32], "merge": [{"abs": 0.2}]}},
            "strategies": strategies, "folds": 2, "bootstrap": 100, "seed": 0,
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = base_env(SEDTUNE_SERVER=self.url, SEDTUNE_TOKEN=TOKEN)
        return subprocess.run([SEDTUNE, *args], capture_output=True, text=True, env=env, timeout=120,
                              cwd=self.root)

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.api("GET", f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def wait(
        self, job_id: str, states: tuple[str, ...] = FINAL, timeout_s: float = JOB_TIMEOUT_S
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in states:
                return job
            time.sleep(1.0)
        raise AssertionError(f"job {job_id} not in {states} after {timeout_s} s: {self.job(job_id)}\n"
                             f"{self.service.log_tail()}")

    def ray_status(self, job_id: str) -> str:
        r = requests.get(f"{self.cluster.dashboard_url}/api/jobs/{job_id}", headers=ray_headers(), timeout=10)
        assert r.status_code == 200, r.text
        return str(r.json()["status"])

    def ray_logs(self, job_id: str) -> str:
        r = requests.get(f"{self.cluster.dashboard_url}/api/jobs/{job_id}/logs", headers=ray_headers(),
                         timeout=10)
        return str(r.json().get("logs", ""))[-3000:] if r.status_code == 200 else r.text


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    root = short_tmp("sdt-e2e-")
    mlflow_root = root / "mlflow"
    mlflow_root.mkdir()
    mlflow = start_mlflow(mlflow_root)
    cluster = RayCluster(root / "ray")
    service = None
    started: list[str] = []
    try:
        cluster.start()
        mlflow.wait_healthy()
        data = root / "data" / "set"
        subprocess.run([SEDTUNE, "synth", str(data), "--clips", "60", "--classes", "3", "--duration-s", "5",
                        "--seed", "3"], check=True, capture_output=True, env=base_env(), timeout=120)
        port = free_port()
        env = base_env(
            SEDTUNE_DATA_DIR=str(root / "svc"), SEDTUNE_TOKENS=TOKEN, SEDTUNE_DATA_ROOTS=str(root / "data"),
            SEDTUNE_OUTPUT_ROOTS=str(root / "out"), SEDTUNE_RAY_ADDRESS=cluster.dashboard_url,
            SEDTUNE_TRACKING_URI=mlflow.url, SEDTUNE_JOB_PYTHON=str(Path(SEDTUNE).with_name("python")),
            SEDTUNE_RECONCILE_INTERVAL_S="1", SEDTUNE_SCHEDULER_TICK_S="1",
        )
        service = Service(f"http://127.0.0.1:{port}", env, root / "serve.log", port).start()
        yield Stack(root, cluster, mlflow, service, data, started)
    finally:
        if service is not None:
            service.stop()
        cluster.stop(started)
        mlflow.stop()
        shutil.rmtree(root, ignore_errors=True)


def _submitted(stack: Stack, job: dict[str, Any]) -> str:
    stack.started_jobs.append(job["id"])
    return str(job["id"])


def test_jobs_by_cli_and_http_succeed_on_ray(stack: Stack) -> None:
    spec_path = stack.root / "cli-job.yaml"
    spec_path.write_text(yaml.safe_dump(stack.spec("e2e-cli")))
    p = stack.cli("submit", str(spec_path), "--json")
    assert p.returncode == 0, p.stderr
    cli_id = _submitted(stack, json.loads(p.stdout))
    r = stack.api("POST", "/v1/jobs", json=stack.spec("e2e-http"))
    assert r.status_code == 201, r.text
    http_id = _submitted(stack, r.json())

    for job_id, name in ((cli_id, "e2e-cli"), (http_id, "e2e-http")):
        job = stack.wait(job_id)
        assert job["status"] == "SUCCEEDED", (job, stack.ray_logs(job_id))
        assert stack.ray_status(job["ray_job_id"]) == "SUCCEEDED"  # through the Ray Jobs API
        assert job["phase"] == "succeeded" and job["best_heldout_f"] is not None
        assert set(job["progress"]) == {"manual", "exact", "random"}
        assert all(p["state"] == "done" for p in job["progress"].values())
        res = stack.api("GET", f"/v1/jobs/{job_id}/result").json()
        assert {r["strategy"] for r in res["comparison"]["rows"]} == {"manual", "exact", "random"}
        assert res["comparison"]["job_id"] == job_id
        assert "exact.robust" in res["params"] and res["best_params"]["format"] == "sedtune.params/2"
        # the run in MLflow, found through the REST API
        rest = Rest(stack.mlflow.url)
        runs = rest.search(rest.experiment_id(name), f"tags.job_id = '{job_id}'")
        parents = [x for x in runs if tags(x).get("sedtune.role") == "job"]
        assert len(parents) == 1 and parents[0]["info"]["status"] == "FINISHED"
        assert job["mlflow"]["run_id"] == parents[0]["info"]["run_id"]
        assert job["mlflow"]["url"].startswith(stack.mlflow.url)
        assert {tags(x).get("strategy") for x in runs} >= {"manual", "exact", "random"}

    p = stack.cli("jobs", "result", cli_id)
    assert p.returncode == 0 and "HELD-OUT F1" in p.stdout and "best parameters" in p.stdout, p.stderr
    p = stack.cli("jobs", "list", "--status", "SUCCEEDED")
    assert cli_id in p.stdout and http_id in p.stdout
    p = stack.cli("jobs", "show", "j-does-not-exist")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "404" in p.stderr
    assert "Traceback" not in p.stderr


def _history(stack: Stack, sid: str) -> list[dict[str, Any]]:
    r = stack.api("GET", f"/v1/schedules/{sid}/history")
    assert r.status_code == 200, r.text
    return list(reversed(r.json()["runs"]))


def test_schedule_runs_twice_warm_started_with_drift_and_skips_overlap(stack: Stack) -> None:
    spec_path = stack.root / "nightly.yaml"
    spec_path.write_text(yaml.safe_dump(stack.spec("e2e-nightly", bayes=True)))
    p = stack.cli("schedules", "create", "nightly", str(spec_path), "--cron", "* * * * *",
                  "--tz", "Europe/Paris", "--json")
    assert p.returncode == 0, p.stderr
    sid = json.loads(p.stdout)["id"]

    # 1. the cron line fires (within a minute)
    deadline = time.monotonic() + 75
    while not (runs := [r for r in _history(stack, sid) if r["job_id"]]):
        assert time.monotonic() < deadline, stack.service.log_tail()
        time.sleep(1)
    first = runs[0]
    assert first["trigger"] == "cron" and first["warm_start"] is None
    stack.started_jobs.append(first["job_id"])

    # 2. a fire while it runs is skipped and recorded
    p = stack.cli("schedules", "run", sid)
    assert p.returncode == 1 and "skipped: overlap" in p.stdout, (p.stdout, p.stderr)
    skipped = [r for r in _history(stack, sid) if r["skip_reason"]]
    assert skipped
    assert skipped[0]["skip_reason"].startswith(f"overlap: the previous run's job {first['job_id']}")

    job1 = stack.wait(first["job_id"])
    assert job1["status"] == "SUCCEEDED", stack.ray_logs(first["job_id"])

    # 3. the second run (run now, or the cron if it came first) is warm-started from the first
    r = stack.api("POST", f"/v1/schedules/{sid}/run")
    assert r.status_code in (201, 409), r.text
    second = [x for x in _history(stack, sid) if x["job_id"]][1]
    stack.started_jobs.append(second["job_id"])
    assert second["warm_start"]["job_id"] == first["job_id"]
    assert second["warm_start"]["applied_to"] == ["bayes"]
    assert second["warm_start"]["params_path"] == f"{job1['output_dir']}/best_params.json"
    job2 = stack.wait(second["job_id"])
    assert job2["status"] == "SUCCEEDED", stack.ray_logs(second["job_id"])
    assert job2["spec"]["strategies"][3]["options"]["warm_start"] == second["warm_start"]["params_path"]

    deadline = time.monotonic() + 15
    while not (second := next(x for x in _history(stack, sid) if x["job_id"] == job2["id"]))["drift"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    drift = second["drift"]
    assert drift["format"] == "sedtune.drift/1" and drift["previous_job_id"] == first["job_id"]
    assert set(drift["classes"]) == set(job2["result"]["best_params"])
    assert drift["heldout_f"]["current"] == job2["best_heldout_f"]
    assert drift["heldout_f"]["previous"] == job1["best_heldout_f"]
    p = stack.cli("schedules", "history", sid)
    assert p.returncode == 0 and "drift vs" in p.stdout and "skipped: overlap" in p.stdout
    assert stack.cli("schedules", "pause", sid).returncode == 0  # no more fires during the next test


def test_restart_in_the_middle_of_a_job_loses_nothing(stack: Stack) -> None:
    r = stack.api("POST", "/v1/jobs", json=stack.spec("e2e-restart"))
    assert r.status_code == 201, r.text
    job_id = _submitted(stack, r.json())
    stack.wait(job_id, ("RUNNING", *FINAL), timeout_s=60)
    schedules_before = stack.api("GET", "/v1/schedules").json()["schedules"]
    history_before = _history(stack, schedules_before[0]["id"])

    stack.service.kill()  # SIGKILL: no shutdown handler runs
    # meanwhile, a job submitted straight to the cluster's Jobs API, without the service
    spec_path = stack.root / "direct.yaml"
    direct = {**stack.spec("e2e-direct"), "output": str(stack.root / "out" / "direct"),
              "tracking": {"enabled": False}}
    spec_path.write_text(yaml.safe_dump(direct))
    p = stack.cli("submit", str(spec_path), "--ray-address", stack.cluster.dashboard_url, "--python",
                  str(Path(SEDTUNE).with_name("python")), "--json")
    assert p.returncode == 0, p.stderr
    direct_id = json.loads(p.stdout)["ray_job_id"]
    stack.started_jobs.append(direct_id)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (status := stack.ray_status(job_id)) not in FINAL:  # Ray goes on without the service
        assert time.monotonic() < deadline
        time.sleep(1)
    assert status == "SUCCEEDED", stack.ray_logs(job_id)

    stack.service.start()
    job = stack.wait(job_id, timeout_s=30)  # reconciled from Ray after the restart
    assert job["status"] == "SUCCEEDED" and job["result"]["recommended"]
    assert stack.api("GET", f"/v1/jobs/{job_id}/result").status_code == 200
    assert stack.api("GET", "/v1/schedules").json()["schedules"] == schedules_before
    assert [x["id"] for x in _history(stack, schedules_before[0]["id"])] == [x["id"] for x in history_before]
    ids = {j["id"] for j in stack.api("GET", "/v1/jobs", params={"limit": 1000}).json()["jobs"]}
    assert set(stack.started_jobs) - {direct_id} <= ids

    while (status := stack.ray_status(direct_id)) not in FINAL:
        assert time.monotonic() < deadline
        time.sleep(1)
    assert status == "SUCCEEDED", stack.ray_logs(direct_id)
    assert (stack.root / "out" / "direct" / "comparison.json").exists()


def test_cancel_stops_the_ray_job(stack: Stack) -> None:
    r = stack.api("POST", "/v1/jobs", json=stack.spec("e2e-cancel"))
    assert r.status_code == 201, r.text
    job_id = _submitted(stack, r.json())
    p = stack.cli("jobs", "cancel", job_id)
    assert p.returncode == 0, p.stderr
    job = stack.wait(job_id, timeout_s=60)
    assert job["status"] == "STOPPED" and job["error"] == "cancelled by request"
    assert stack.ray_status(job_id) == "STOPPED"
    p = stack.cli("jobs", "cancel", job_id)
    assert p.returncode == 2 and "409" in p.stderr and p.stderr.count("\n") == 1


def _classes(stack: Stack) -> list[str]:
    with open(stack.data / "ground_truth.tsv", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t")
        return sorted({row["event_label"] for row in rows if row.get("event_label")})


def test_a_140_kb_spec_named_mlflow_db_runs_once_per_idempotency_key(stack: Stack) -> None:
    spec = stack.spec("mlflow.db")
    classes = _classes(stack)
    spec["data"]["classes"] = classes * (150_000 // len(json.dumps(classes)))  # repeats are one class each
    assert 140_000 < len(json.dumps(spec)) < 200_000
    spec_path = stack.root / "big.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    ids = []
    for _ in range(2):
        p = stack.cli("submit", str(spec_path), "--json", "--idempotency-key", "e2e-big-1")
        assert p.returncode == 0, p.stderr
        ids.append(_submitted(stack, json.loads(p.stdout)))
    assert ids[0] == ids[1]
    jobs = stack.api("GET", "/v1/jobs", params={"name": "mlflow.db"}).json()["jobs"]
    assert [j["id"] for j in jobs] == [ids[0]]
    job = stack.wait(ids[0])
    assert job["status"] == "SUCCEEDED", (job, stack.ray_logs(ids[0]))
    assert job["output_dir"].startswith(str(stack.root / "out" / "mlflow.db" / "j-"))
    rest = Rest(stack.mlflow.url)
    runs = rest.search(rest.experiment_id("mlflow.db"), f"tags.job_id = '{ids[0]}'")
    assert [tags(x).get("sedtune.role") for x in runs].count("job") == 1


def test_a_schedule_refuses_to_fire_once_its_data_links_out_of_the_roots(stack: Stack) -> None:
    own = stack.root / "data" / "swap-set"
    shutil.copytree(stack.data, own)
    outside = stack.root / "outside" / "set"  # a valid set, out of the data roots
    shutil.copytree(stack.data, outside)
    spec = stack.spec("e2e-swap")
    spec["data"] = {k: v.replace(str(stack.data), str(own)) for k, v in spec["data"].items()}
    r = stack.api("POST", "/v1/schedules", json={"name": "swap", "cron": "0 3 * * *", "spec": spec})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]

    own.rename(own.with_name("swap-set.orig"))
    own.symlink_to(outside, target_is_directory=True)
    p = stack.cli("schedules", "run", sid)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr, p.stderr
    assert "HTTP 422" in p.stderr and "data.scores" in p.stderr
    assert "outside the allowed data roots" in p.stderr
    (run,) = _history(stack, sid)
    assert run["job_id"] is None and run["skip_reason"].startswith("refused: data.scores: ")
    r = stack.api("POST", "/v1/jobs", json=spec)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "data.scores", r.text
    assert stack.api("GET", "/v1/jobs", params={"name": "e2e-swap"}).json()["jobs"] == []
