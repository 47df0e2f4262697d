"""Tracking with the embedded default: SQLite under the working directory (no server, no Ray)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import main
from service.results.tracking import log_results
from tests.integration.mlflow_support import fake_result_dir


def test_embedded_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    d = fake_result_dir(tmp_path)
    report = log_results(str(d))  # spec tracking.uri is None
    uri = f"sqlite:///{work / 'mlflow.db'}"
    assert report.uri == uri and (work / "mlflow.db").is_file()
    assert report.experiment == "fake-job" and set(report.strategy_runs) == {"manual", "random", "rl"}
    assert report.trial_runs == 3
    assert report.skipped == ["rl/missing (/nonexistent/elsewhere/missing.bin: not found)"]

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([report.experiment_id], max_results=100)
    by_id = {r.info.run_id: r for r in runs}
    assert len(runs) == 1 + 3 + 3 and all(r.info.status == "FINISHED" for r in runs)
    random_id = report.strategy_runs["random"]
    trials = [r for r in runs if r.data.tags.get("sedtune.role") == "trial"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {random_id}
    assert by_id[random_id].data.tags["mlflow.parentRunId"] == report.run_id
    rl = report.strategy_runs["rl"]
    assert [f.path for f in client.list_artifacts(rl, "policy")] == ["policy/policy.pt"]
    # artifacts live next to the database
    assert (work / "mlartifacts").is_dir()
    assert client.get_experiment(report.experiment_id).artifact_location.startswith(
        f"file://{work}/mlartifacts"
    )

    # `sedtune log` of the same job again: already tracked, nothing new
    assert main(["log", str(d)]) == 0
    assert capsys.readouterr().out.startswith(f"already tracked: experiment fake-job, run {report.run_id}")
    assert len(client.search_runs([report.experiment_id], max_results=100)) == 7
    assert main(["log", str(tmp_path / "nothing-here")]) == 2


def test_an_existing_experiment_gets_the_training_kind_unless_it_has_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from service.results.tracking_layout import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    bare = client.create_experiment("made-elsewhere")
    chosen = client.create_experiment("chosen-kind", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    d = fake_result_dir(tmp_path)
    assert log_results(str(d), uri, "made-elsewhere").experiment_id == bare
    assert log_results(str(d), uri, "chosen-kind").experiment_id == chosen
    assert log_results(str(d), uri, "new-one").experiment_id not in (bare, chosen)
    kinds = {}
    for name in ("made-elsewhere", "chosen-kind", "new-one"):
        exp = client.get_experiment_by_name(name)
        assert exp is not None
        kinds[name] = exp.tags.get(EXPERIMENT_KIND_TAG)
    assert kinds == {
        "made-elsewhere": EXPERIMENT_KIND,
        "chosen-kind": "genai_development",
        "new-one": EXPERIMENT_KIND,
    }
