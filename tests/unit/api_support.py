"""Shared helpers of the API unit tests: an app on a fake cluster, a fake clock and fake results."""

from __future__ import annotations

import json
import os
import shlex
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.server.settings import Settings
from service.store.repo import Store
from tests.fakes import FakeClock, FakeSubmitter
from tests.ports import free_port

TOKEN = "unit-test-token-1"
OTHER_TOKEN = "unit-test-token-2"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Api:
    """An app on a fake cluster and clock, with its client and parts."""

    client: TestClient
    submitter: FakeSubmitter
    clock: FakeClock
    store: Store
    settings: Settings
    root: Path

    @property
    def svc(self) -> Any:
        """The app's services."""
        return self.client.app.state.services  # type: ignore[attr-defined]

    def spec(self, **over: Any) -> dict[str, Any]:
        """A valid job spec over the data root."""
        d = self.root / "data" / "set"
        spec: dict[str, Any] = {
            "name": "unit",
            "data": {"scores": str(d / "scores"), "ground_truth": str(d / "ground_truth.tsv"),
                     "durations": str(d / "durations.tsv")},
            "strategies": [{"name": "manual"}, {"name": "exact", "budget": 30},
                           {"name": "bayes", "budget": 4}],
        }
        spec.update(over)
        return spec

    def reopen(self) -> Api:
        """A new app over the same database (a restarted service)."""
        return make_api(self.root, self.settings, self.submitter, self.clock)

    def entrypoint(self, job_id: str) -> list[str]:
        """The argv of the Ray entrypoint submitted for ``job_id``."""
        return shlex.split(next(e for s, e, _, _ in self.submitter.submitted if s == job_id))

    def job_file(self, job_id: str) -> dict[str, Any]:
        """The job file the entrypoint of ``job_id`` names (``--spec-file``)."""
        argv = self.entrypoint(job_id)
        with open(argv[argv.index("--spec-file") + 1], encoding="utf-8") as f:
            doc: dict[str, Any] = json.load(f)
        return doc

    def sent_spec(self, job_id: str) -> dict[str, Any]:
        """The spec the Ray job of ``job_id`` was given."""
        spec: dict[str, Any] = self.job_file(job_id)["spec"]
        return spec


def make_settings(root: Path, **over: Any) -> Settings:
    """Settings with a data root and an output root under ``root``."""
    s = Settings(data_dir=str(root / "svc"), tokens=frozenset({TOKEN, OTHER_TOKEN}),
                 data_roots=(str(root / "data"),), output_roots=(str(root / "out"),),
                 allowed_schemes=("s3", "gs"), check_data=False, tracking_uri="http://mlflow.test:5000")
    return replace(s, **over).resolved()


def make_api(root: Path, settings: Settings | None = None, submitter: FakeSubmitter | None = None,
             clock: FakeClock | None = None) -> Api:
    """An app (no background loops) over a fresh or existing store in ``root``."""
    settings = settings or make_settings(root)
    submitter = submitter or FakeSubmitter()
    clock = clock or FakeClock()
    store = Store(settings.db_url)
    app = create_app(settings, store, submitter, background=False, clock=clock)
    return Api(TestClient(app), submitter, clock, store, settings, root)


@pytest.fixture(name="api", params=["sqlite", "postgresql"])
def api_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Api]:
    """An app on a fake cluster, with its data root (specs are checked against the path policy;
    the data itself is not read: ``check_data`` is off).

    Once per store: the embedded SQLite, and a fresh database on a real PostgreSQL server
    (the ``postgres`` fixture; the deployments' store).
    """
    (tmp_path / "data" / "set").mkdir(parents=True)
    if request.param == "sqlite":
        yield make_api(tmp_path)
        return
    server = request.getfixturevalue("postgres")
    with server.database() as url:
        api = make_api(tmp_path, make_settings(tmp_path, db_url=url))
        try:
            yield api
        finally:
            api.store.close()


@contextmanager
def serve(api: Api) -> Iterator[str]:
    """The app of ``api`` served by a real uvicorn on a free loopback port; yields its URL."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(api.client.app, host="127.0.0.1", port=port, log_level="warning",
                                        lifespan="off"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)  # polling with a deadline
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


def write_fake_result(output_dir: str, job_id: str, threshold: float, heldout_f: float) -> None:
    """What a successful job leaves in its output directory (the layout of write_outputs)."""
    os.makedirs(os.path.join(output_dir, "params"), exist_ok=True)
    params = {"format": "sedtune.params/1", "frame_hop_s": 0.064, "classes": {
        "Dog": {"median_filter_frames": 7, "threshold": threshold, "threshold_off": None, "fill_gap_s": 0.0,
                "min_duration_s": 0.0},
        "Cat": {"median_filter_frames": 3, "threshold": 0.5, "threshold_off": None, "fill_gap_s": 0.0,
                "min_duration_s": 0.0}}}
    row = {"strategy": "bayes", "selection": "robust", "tuning_f": {"mean": heldout_f + 0.05, "std": 0.0},
           "heldout_f": {"mean": heldout_f, "std": 0.0},
           "gain_over_manual": {"mean": 0.01, "ci95": [-0.01, 0.03], "significant": False},
           "evaluations": 4.0, "params": params["classes"]}
    comparison = {"job": "unit", "job_id": job_id, "recommended": "bayes/robust", "message": "fake",
                  "classes": ["Dog", "Cat"], "frame_hop_s": 0.064, "rows": [row]}
    for name, doc in (("comparison.json", comparison), ("best_params.json", params),
                      ("params/bayes.robust.json", params)):
        with open(os.path.join(output_dir, name), "w", encoding="utf-8") as f:
            json.dump(doc, f)
    status = {"format": "sedtune.status/1", "job_id": job_id, "state": "succeeded",
              "strategies": {"bayes": {"state": "done", "evaluations": 4.0, "budget": 4.0, "fraction": 1.0,
                                       "best_tuning_f": heldout_f + 0.05}},
              "best_tuning_f": heldout_f + 0.05, "recommended": "bayes/robust", "heldout_f": heldout_f,
              "mlflow": {"uri": "http://mlflow.test:5000", "experiment": "unit", "experiment_id": "3",
                         "run_id": f"run-{job_id}", "url": f"http://mlflow.test:5000/#/experiments/3/runs/run-{job_id}"},
              "tracking": "tracked", "error": None}
    with open(os.path.join(output_dir, "status.json"), "w", encoding="utf-8") as f:
        json.dump(status, f)
