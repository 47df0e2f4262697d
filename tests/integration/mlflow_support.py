"""Test support: a real ``mlflow server`` on loopback and a small client of its REST API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.ports import free_port

MLFLOW = str(Path(sys.executable).with_name("mlflow"))


@dataclass
class MlflowServer:
    """A running ``mlflow server`` started by :func:`start_server`."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        """Stop the server: its own process group (the server and its uvicorn child), by id."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)

    def log_tail(self) -> str:
        """The end of the server's log, for failure messages."""
        return self.log_path.read_text(errors="replace")[-3000:]

    def wait_ready(self, timeout_s: float = 120.0) -> MlflowServer:
        """Wait until ``/health`` answers (stops the server and raises if it does not in time)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {timeout_s} s:\n{self.log_tail()}")


def start_server(root: Path) -> MlflowServer:
    """Start ``mlflow server`` (SQLite store, proxied artifacts); :meth:`MlflowServer.wait_ready` next.

    Args:
        root: Directory for the database, the artifacts and the log.
    """
    port = free_port()
    log_path = root / "server.log"
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root,
                                start_new_session=True)
    return MlflowServer(f"http://127.0.0.1:{port}", proc, log_path)


class Rest:
    """The MLflow REST API (``/api/2.0/mlflow``) and artifact download, as used by the tests."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _get(self, endpoint: str, **params: Any) -> Any:
        r = requests.get(f"{self.url}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
        r.raise_for_status()
        return r.json()

    def _post(self, endpoint: str, body: dict[str, Any]) -> Any:
        r = requests.post(f"{self.url}/api/2.0/mlflow/{endpoint}", json=body, timeout=30)
        r.raise_for_status()
        return r.json()

    def experiment_id(self, name: str) -> str:
        """Id of the experiment called ``name``."""
        return str(self._get("experiments/get-by-name", experiment_name=name)["experiment"]["experiment_id"])

    def experiment_tags(self, experiment_id: str) -> dict[str, str]:
        """The tags of an experiment."""
        exp = self._get("experiments/get", experiment_id=experiment_id)["experiment"]
        return {t["key"]: t["value"] for t in exp.get("tags", [])}

    def search(self, experiment_id: str, filter_string: str = "") -> list[dict[str, Any]]:
        """Every run of an experiment matching the filter (all pages)."""
        out: list[dict[str, Any]] = []
        token = None
        while True:
            body: dict[str, Any] = {"experiment_ids": [experiment_id], "filter": filter_string,
                                    "max_results": 1000}
            if token:
                body["page_token"] = token
            page = self._post("runs/search", body)
            out += page.get("runs", [])
            token = page.get("next_page_token")
            if not token:
                return out

    def history(self, run_id: str, key: str) -> list[dict[str, Any]]:
        """A metric's full history, ordered by step."""
        ms = self._get("metrics/get-history", run_id=run_id, metric_key=key, max_results=25000)["metrics"]
        return sorted(ms, key=lambda m: (m["step"], m["timestamp"]))

    def artifacts(self, run_id: str, path: str = "") -> list[str]:
        """Artifact file paths of a run, recursively."""
        files = self._get("artifacts/list", run_id=run_id, path=path).get("files", [])
        out: list[str] = []
        for f in files:
            out += self.artifacts(run_id, f["path"]) if f["is_dir"] else [f["path"]]
        return out

    def artifact(self, run_id: str, path: str) -> bytes:
        """Download one artifact through the server."""
        r = requests.get(f"{self.url}/get-artifact", params={"run_id": run_id, "path": path}, timeout=30)
        r.raise_for_status()
        return r.content

    def artifact_json(self, run_id: str, path: str) -> Any:
        """Download and parse a JSON artifact."""
        return json.loads(self.artifact(run_id, path))


def tags(run: dict[str, Any]) -> dict[str, str]:
    """A REST run's tags as a dict."""
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def params(run: dict[str, Any]) -> dict[str, str]:
    """A REST run's params as a dict."""
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def metrics(run: dict[str, Any]) -> dict[str, float]:
    """A REST run's latest metric values as a dict."""
    return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}


def _row(strategy: str, selection: str, params: dict[str, dict[str, Any]] | None, tuning: float,
         heldout: float, trajectory: list[tuple[float, float]]) -> dict[str, Any]:
    classes = {"Dog": 0.1, "Alarm (bell)": -0.1}
    figs = {c: {"f_measure": round(heldout + d, 6), "precision": 0.5, "recall": round(heldout + d, 6),
                "nref": 10.0, "nsys": 12.0, "ntp": 5.0} for c, d in classes.items()}
    tfigs = {c: dict(f, f_measure=round(tuning + d, 6)) for c, f in figs.items() for d in [classes[c]]}
    return {
        "strategy": strategy, "selection": selection,
        "tuning_f": {"mean": tuning, "std": 0.0}, "heldout_f": {"mean": heldout, "std": 0.0},
        "gain_over_manual": {"mean": round(heldout - 0.4, 6), "ci95": [-0.05, 0.1], "significant": False},
        "evaluations": trajectory[-1][0], "wall_s": 1.5,
        "heldout_class_f": {c: f["f_measure"] for c, f in figs.items()},
        "tuning_class_f": {c: f["f_measure"] for c, f in tfigs.items()},
        "heldout_class": figs, "tuning_class": tfigs, "params": params,
        "trajectory": [{"evaluations": e, "best_f": f, "wall_s": 0.1 * i}
                       for i, (e, f) in enumerate(trajectory)],
    }


def _params(threshold: float, kernel: int) -> dict[str, dict[str, Any]]:
    one = {"median_filter_frames": kernel, "threshold": threshold, "threshold_off": None,
           "fill_gap_s": 0.0, "min_duration_s": 0.0}
    return {"Dog": dict(one), "Alarm (bell)": dict(one, threshold=round(threshold + 0.1, 6))}


def fake_result_dir(
    root: Path, written_at: str = "/nonexistent/original-output", *, plots: bool = False
) -> Path:
    """A small hand-made result directory in the layout :func:`service.tuning.outputs.write_outputs` writes.

    Strategies manual, random (with ``trials.random.json``) and rl (fractional evaluations,
    ``untrained`` and ``adaptive`` rows, a policy checkpoint named in ``artifacts.json`` by its
    path at ``written_at``, i.e. the directory has moved since the job wrote it). With ``plots``
    the figures are drawn now into ``plots/`` and named in ``artifacts.json``, as a job does
    (otherwise tracking draws them when it logs).
    """
    out = root / "result"
    (out / "params").mkdir(parents=True)
    rl_traj = [(0.25, 0.3), (0.5, 0.35), (1.0, 0.36), (1.75, 0.41), (2.5, 0.41)]
    rows = [
        _row("manual", "fixed", _params(0.5, 7), 0.38, 0.4, [(1.0, 0.38)]),
        _row("random", "naive", _params(0.31, 5), 0.45, 0.41, [(1.0, 0.3), (2.0, 0.45), (3.0, 0.45)]),
        _row("random", "robust", _params(0.42, 9), 0.44, 0.43, [(1.0, 0.3), (2.0, 0.45), (3.0, 0.45)]),
        _row("rl", "naive", _params(0.2, 3), 0.41, 0.39, rl_traj),
        _row("rl", "robust", _params(0.25, 3), 0.40, 0.42, rl_traj),
        _row("rl", "untrained", _params(0.6, 1), 0.2, 0.21, rl_traj),
        _row("rl", "adaptive", None, 0.43, 0.44, rl_traj),
    ]
    comparison = {
        "job": "fake-job", "job_id": "0123abcd4567", "dataset_fingerprint": "feedfacecafebeef",
        "versions": {"sedtune": "0.1.0", "ray": "2.60.0", "sed_eval": "0.2.1", "numpy": "2.4.6",
                     "mlflow": "3.17.2"},
        "seed": 7, "frame_hop_s": 0.064, "classes": ["Dog", "Alarm (bell)"], "splits": 1,
        "selection": "robust", "recommended": "rl/robust", "message": "Recommended: rl/robust.",
        "wall_s": 12.5, "rows": rows,
    }
    spec = {
        "name": "fake-job",
        "data": {"scores": "s/", "ground_truth": "gt.tsv", "durations": None, "classes": None},
        "space": {"decoders": ["frames"], "kernels": [1, 3, 5], "threshold": {"low": 0.05, "high": 0.95}},
        "strategies": [{"name": "manual", "budget": None, "options": {}},
                       {"name": "random", "budget": 3.0, "options": {}},
                       {"name": "rl", "budget": 2.5, "options": {"episode_clips": 4}}],
        "selection": "robust", "seed": 7,
        "tracking": {"enabled": True, "uri": None, "experiment": None}, "output": written_at,
    }
    artifacts: dict[str, str] = {}
    for r in rows:
        if r["params"] is not None:
            p = out / "params" / f"{r['strategy']}.{r['selection']}.json"
            p.write_text(json.dumps({"format": "sedtune.params/1", "frame_hop_s": 0.064,
                                     "classes": r["params"]}))
            artifacts[f"params/{r['strategy']}/{r['selection']}"] = f"{written_at}/params/{p.name}"
    (out / "best_params.json").write_text(json.dumps({"format": "sedtune.params/1", "frame_hop_s": 0.064,
                                                      "classes": rows[4]["params"]}))
    (out / "comparison.json").write_text(json.dumps(comparison, indent=2))
    (out / "comparison.md").write_text("# sedtune job `fake-job`\n\n| strategy | selection |\n|---|---|\n")
    (out / "spec.resolved.json").write_text(json.dumps(spec, indent=2))
    policy = out / "work" / "split0" / "rl" / "policy"
    policy.mkdir(parents=True)
    (policy / "policy.pt").write_bytes(b"\x00fake checkpoint\x01" * 64)
    artifacts["rl/policy"] = f"{written_at}/work/split0/rl/policy"
    artifacts["rl/missing"] = "/nonexistent/elsewhere/missing.bin"
    if plots:
        from service.results.plots import write_plots

        for name, path in write_plots(comparison, str(out / "plots")).items():
            artifacts[f"plots/{name}"] = f"{written_at}/plots/{Path(path).name}"
    (out / "artifacts.json").write_text(json.dumps(artifacts, indent=2))
    trials = [{"index": i, "f": 0.3 + 0.05 * i, "params": _params(0.3 + 0.1 * i, 2 * i + 1)}
              for i in range(3)]
    (out / "trials.random.json").write_text(json.dumps(trials))
    return out
