"""MLflow tracking against a real ``mlflow server`` on loopback, checked through its REST API.

One module-scoped server and one local Ray serve every test here: a job with every strategy
logged online (``sedtune tune`` in-process), the same job again (identical params and F1), the
job against an unreachable server then ``sedtune log``, and logging from a Ray task pinned to the
worker node of a two-node ``ray.cluster_utils.Cluster``.

The rl strategy is included when ``SEDTUNE_TEST_RL=1`` (it is still under construction).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.cli import main
from service.results.tracking_layout import (
    CURVE_METRIC,
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    HEADLINE,
    PER_CLASS,
    TRIAL_FILTER,
)
from tests.integration.mlflow_support import (
    MlflowServer,
    Rest,
    metrics,
    params,
    start_server,
    tags,
)
from tests.ports import free_port

pytestmark = [pytest.mark.ray]

STRATEGIES = ["manual", "exact", "random", "bayes"]
if os.environ.get("SEDTUNE_TEST_RL") == "1":
    STRATEGIES.append("rl")
BUDGET = 10
COMMON_FIELDS = ("median_filter_frames", "threshold", "fill_gap_s", "min_duration_s")
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Job:
    """A job run through the CLI."""

    spec: Path
    out: Path
    experiment: str
    rc: int
    stdout: str
    stderr: str

    @property
    def comparison(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "comparison.json").read_text())
        return data


@pytest.fixture(scope="module")
def server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    srv = start_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def server(server_process: MlflowServer, data_dir: Path, local_ray: None) -> MlflowServer:
    """The server, ready; it starts while the data is generated and Ray starts."""
    return server_process.wait_ready()


@pytest.fixture(scope="module")
def rest(server: MlflowServer) -> Rest:
    return Rest(server.url)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from envs.synth import generate
    from envs.synth_config import SynthConfig

    d = tmp_path_factory.mktemp("synth")
    generate(str(d), SynthConfig(n_clips=80, n_classes=3, seed=0))
    return d


def write_spec(root: Path, data: Path, out: Path, uri: str, experiment: str) -> Path:
    spec = {
        "name": "trk",
        "data": {
            "scores": str(data / "scores"),
            "ground_truth": str(data / "ground_truth.tsv"),
            "durations": str(data / "durations.tsv"),
        },
        "heldout": {"fraction": 0.5, "seed": 0},
        # Both decoders (5 settings at a budget of 10): MLflow shows each class's decoder.
        "space": {
            "kernels": [1, 3, 5],
            "threshold": {"low": 0.05, "high": 0.95},
            "boxes": {"step_filter_s": [0.32, 0.64], "merge": [{"abs": 0.2}]},
        },
        "strategies": [{"name": s} if s == "manual" else {"name": s, "budget": BUDGET} for s in STRATEGIES],
        "folds": 4,
        "bootstrap": 200,
        "seed": 0,
        "output": str(out),
        "tracking": {"uri": uri, "experiment": experiment},
    }
    path = root / f"spec-{experiment}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def run_job(spec: Path, out: Path, experiment: str, force: bool = False) -> Job:
    rc, stdout, stderr = run_cli(["tune", str(spec), *(["--force"] if force else [])])
    return Job(spec, out, experiment, rc, stdout, stderr)


@pytest.fixture(scope="module")
def online_job(
    tmp_path_factory: pytest.TempPathFactory, server: MlflowServer, data_dir: Path, local_ray: None
) -> Job:
    root = tmp_path_factory.mktemp("online")
    spec = write_spec(root, data_dir, root / "results", server.url, "trk-online")
    return run_job(spec, root / "results", "trk-online")


def parents(rest: Rest, experiment: str) -> list[dict[str, Any]]:
    return rest.search(rest.experiment_id(experiment), "tags.`sedtune.role` = 'job'")


def children(rest: Rest, experiment: str, parent_id: str) -> dict[str, dict[str, Any]]:
    runs = rest.search(rest.experiment_id(experiment), f"tags.mlflow.parentRunId = '{parent_id}'")
    return {tags(r)["strategy"]: r for r in runs}


def primary_row(comparison: dict[str, Any], strategy: str) -> dict[str, Any]:
    rows = [r for r in comparison["rows"] if r["strategy"] == strategy]
    return next((r for r in rows if r["selection"] in (comparison["selection"], "fixed")), rows[0])


def check_logged_job(rest: Rest, job: Job) -> str:
    """Everything the issue lists, through the REST API; returns the parent run id."""
    cmp = job.comparison
    exp_id = rest.experiment_id(job.experiment)
    assert rest.experiment_tags(exp_id)[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND  # not a GenAI one
    (parent,) = parents(rest, job.experiment)
    pid = parent["info"]["run_id"]
    assert parent["info"]["status"] == "FINISHED"
    spec = json.loads((job.out / "spec.resolved.json").read_text())
    p = params(parent)
    assert p["seed"] == "0" and p["folds"] == "4" and p["heldout.fraction"] == "0.5"
    assert p["strategies.random.budget"] == str(float(BUDGET))
    assert p["space.kernels"] == json.dumps(spec["space"]["kernels"])
    assert tags(parent)["job_id"] == cmp["job_id"]

    kids = children(rest, job.experiment, pid)
    assert sorted(kids) == sorted(STRATEGIES)
    for s, run in kids.items():
        t, p, m = tags(run), params(run), metrics(run)
        assert run["info"]["status"] == "FINISHED"
        assert t["job_id"] == cmp["job_id"] and t["dataset_fingerprint"] == cmp["dataset_fingerprint"]
        assert t["seed"] == str(cmp["seed"])
        for pkg in ("sedtune", "ray", "sed_eval"):
            assert t[f"{pkg}_version"] == cmp["versions"][pkg]
        row = primary_row(cmp, s)
        for c in cmp["classes"]:  # per-class params of the job's selection, the other one prefixed
            fields = row["params"][c]
            assert set(fields) >= {"decoder", *COMMON_FIELDS}, (s, c, fields)
            for f in fields:  # the class's decoder and that decoder's fields
                v = fields[f]
                assert p[f"{c}/{f}"] == (v if isinstance(v, str) else json.dumps(v)), (s, c, f)
            if s != "manual":
                assert f"naive.{c}/threshold" in p
        # the headline figures: the chart view's first section
        head = {k.removeprefix(f"{HEADLINE}/"): v for k, v in m.items() if k.startswith(f"{HEADLINE}/")}
        gain = row["gain_over_manual"]
        assert head == {
            "heldout_f1": row["heldout_f"]["mean"],
            "heldout_gain_over_manual": gain["mean"],
            "heldout_gain_ci95_low": gain["ci95"][0],
            "heldout_gain_ci95_high": gain["ci95"][1],
            "tuning_f1": row["tuning_f"]["mean"],
            "tuning_evaluations": row["evaluations"],
            "wall_s": row["wall_s"],
            "tuning_f1_curve": row["trajectory"][-1]["best_f"],
        }, s
        manual = primary_row(cmp, "manual")
        assert m["manual_heldout_f1"] == manual["heldout_f"]["mean"]
        for c in cmp["classes"]:
            for part in ("tuning", "heldout"):
                for key, name in (("f_measure", "f1"), ("precision", "precision"), ("recall", "recall")):
                    assert m[f"{PER_CLASS}/{part}/{c}/{name}"] == row[f"{part}_class"][c][key], (s, part, c)
        sections = {k.rsplit("/", 1)[0] for k in m if "/" in k}  # the chart sections of the MLflow UI
        assert min(sections) == HEADLINE and all(x.startswith(f"{PER_CLASS}/") for x in sections - {HEADLINE})
        # the F1 curve: one point per evaluation step, on integer steps
        hist = rest.history(run["info"]["run_id"], CURVE_METRIC)
        want = {math.ceil(pt["evaluations"] - 1e-9): pt["best_f"] for pt in row["trajectory"]}
        assert [(h["step"], h["value"]) for h in hist] == sorted(want.items()), s
        if s != "manual":
            assert len(hist) >= 2
        # artifacts of the strategy run
        arts = rest.artifacts(run["info"]["run_id"])
        for r in cmp["rows"]:
            if r["strategy"] == s and r["params"] is not None:
                name = f"params/{s}.{r['selection']}.json"
                assert name in arts
                assert rest.artifact_json(run["info"]["run_id"], name)["classes"] == r["params"]
        assert rest.artifact(run["info"]["run_id"], f"plots/class_f1.{s}.png").startswith(PNG)
        written = json.loads((job.out / "artifacts.json").read_text())
        if f"{s}/policy" in written:
            assert any(a.startswith("policy") for a in arts)
        trials = rest.search(
            rest.experiment_id(job.experiment), f"tags.mlflow.parentRunId = '{run['info']['run_id']}'"
        )
        trials_file = job.out / f"trials.{s}.json"
        assert len(trials) == (len(json.loads(trials_file.read_text())) if trials_file.exists() else 0)
        assert all(tags(t)["sedtune.role"] == "trial" and "tuning_f1" in metrics(t) for t in trials)

    # the README's filter hides the trial runs and keeps the job and its strategy runs
    shown = rest.search(exp_id, f"{TRIAL_FILTER} and tags.job_id = '{cmp['job_id']}'")
    unfiltered = [pid, *(r["info"]["run_id"] for r in kids.values())]
    assert sorted(r["info"]["run_id"] for r in shown) == sorted(unfiltered)

    arts = rest.artifacts(pid)
    for name in ("spec.resolved.json", "comparison.json", "best_params.json", "artifacts.json"):
        rest.artifact_json(pid, name)
    assert rest.artifact_json(pid, "comparison.json") == cmp
    assert rest.artifact_json(pid, "spec.resolved.json") == spec
    assert "| strategy |" in rest.artifact(pid, "comparison.md").decode()
    for r in cmp["rows"]:
        if r["params"] is not None:
            assert f"params/{r['strategy']}.{r['selection']}.json" in arts
    for fig in ("plots/f1_vs_evaluations.png", "plots/class_f1.png"):
        data = rest.artifact(pid, fig)
        assert data.startswith(PNG) and len(data) > 10_000
        assert data == (job.out / fig).read_bytes()
    return str(pid)


def test_job_is_tracked_online(online_job: Job, rest: Rest) -> None:
    assert online_job.rc == 0, online_job.stderr[-3000:]
    pid = check_logged_job(rest, online_job)
    lines = [x for x in online_job.stdout.splitlines() if x.startswith("tracked:")]
    assert len(lines) == 1 and f"run {pid} at {rest.url}" in lines[0]
    exp_id = rest.experiment_id(online_job.experiment)
    assert f"compare at {rest.url}/#/experiments/{exp_id}/runs?workflowType=machine_learning" in lines[0]
    assert "tracking failed" not in online_job.stderr


def test_figures_are_real(online_job: Job) -> None:
    from PIL import Image

    for name in ["f1_vs_evaluations", "class_f1", *[f"class_f1.{s}" for s in STRATEGIES]]:
        path = online_job.out / "plots" / f"{name}.png"
        with Image.open(path) as im:
            assert im.format == "PNG" and im.width >= 500 and im.height >= 400
            assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50
        assert path.stat().st_size > 10_000


def test_rerun_logs_identical_params_and_f1(online_job: Job, rest: Rest) -> None:
    # into the same output: tune refuses a non-empty folder unless told to replace it
    again = run_job(online_job.spec, online_job.out, online_job.experiment, force=True)
    assert again.rc == 0, again.stderr[-3000:]
    first, second = sorted(parents(rest, online_job.experiment), key=lambda r: r["info"]["start_time"])
    assert tags(first)["job_id"] != tags(second)["job_id"]
    assert params(first) == params(second)

    def f1(m: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in m.items() if "wall_s" not in k}

    assert f1(metrics(first)) == f1(metrics(second))
    a = children(rest, online_job.experiment, first["info"]["run_id"])
    b = children(rest, online_job.experiment, second["info"]["run_id"])
    assert sorted(a) == sorted(b) == sorted(STRATEGIES)
    for s in a:
        assert params(a[s]) == params(b[s]), s
        assert f1(metrics(a[s])) == f1(metrics(b[s])), s
        ha = [(h["step"], h["value"]) for h in rest.history(a[s]["info"]["run_id"], CURVE_METRIC)]
        hb = [(h["step"], h["value"]) for h in rest.history(b[s]["info"]["run_id"], CURVE_METRIC)]
        assert ha == hb, s


def test_unreachable_server_then_sedtune_log(
    tmp_path: Path, server: MlflowServer, rest: Rest, data_dir: Path, local_ray: None
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "results"
    job = run_job(write_spec(tmp_path, data_dir, out, dead, "trk-offline"), out, "trk-offline")
    assert job.rc == 0
    for name in (
        "comparison.json",
        "comparison.md",
        "best_params.json",
        "spec.resolved.json",
        "plots/f1_vs_evaluations.png",
    ):
        assert (out / name).is_file(), name
    failed = [x for x in job.stderr.splitlines() if "tracking failed" in x]
    assert len(failed) == 1, job.stderr[-3000:]
    assert failed[0].startswith(f"tracking failed: cannot reach {dead} (")
    assert failed[0].endswith(
        f"; results are in {out}; re-log with `sedtune log {out} --tracking-uri {dead}`"
    )
    assert "tracked:" not in job.stdout

    rc, stdout, stderr = run_cli(["log", str(out), "--tracking-uri", dead])
    assert rc == 1 and stdout == "" and stderr.count("\n") == 1
    assert stderr.startswith("tracking failed: cannot reach")

    rc, stdout, _ = run_cli(["log", str(out), "--tracking-uri", server.url])
    assert rc == 0 and stdout.startswith("tracked: experiment trk-offline, run ")
    check_logged_job(rest, job)
    rc, stdout, _ = run_cli(["log", str(out), "--tracking-uri", server.url])  # again: nothing new
    assert rc == 0 and stdout.startswith("already tracked:")
    assert len(parents(rest, "trk-offline")) == 1


def test_logging_from_a_ray_worker_on_another_node(
    online_job: Job, server: MlflowServer, rest: Rest, tmp_path: Path
) -> None:
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from service.results.tracking import ensure_experiment

    if ray.is_initialized():
        ray.shutdown()  # the module's local Ray; this test needs a cluster of its own
    copy = tmp_path / "results"
    shutil.copytree(online_job.out, copy, ignore=shutil.ignore_patterns("work"))
    job = Job(online_job.spec, copy, "trk-cluster", 0, "", "")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        ensure_experiment(server.url, "trk-cluster")  # once, in the driver

        @ray.remote(num_cpus=1)
        def log_there(result_dir: str, uri: str) -> tuple[str, str]:
            from service.results.tracking import log_results

            report = log_results(result_dir, uri, "trk-cluster")
            return report.run_id, ray.get_runtime_context().get_node_id()

        pinned = NodeAffinitySchedulingStrategy(node_id=worker.node_id, soft=False)
        run_id, node = ray.get(
            log_there.options(scheduling_strategy=pinned).remote(str(copy), server.url), timeout=300
        )
        assert cluster.head_node is not None
        assert node == worker.node_id != cluster.head_node.node_id
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]
    assert check_logged_job(rest, job) == run_id
