"""Tracking prepared in a helper process (:mod:`service.results.tracking_helper`): real MLflow on
SQLite, real helper processes, no Ray.

The helper must log exactly what :func:`service.results.tracking.try_log` logs, never create
or replace a store unless there are results to log, and fall back to logging in the caller
when it fails.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.results import tracking_helper
from service.results.tracking import try_log
from tests.integration.mlflow_support import fake_result_dir


@pytest.fixture
def helper_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Helpers enabled; their temporary folders go to ``tmp_path / "tmp"`` (returned)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.chdir(tmp_path)
    tracking_helper.enable()
    yield tmp
    tracking_helper.enable(False)


def _start(uri: str) -> tracking_helper.Helper:
    helper = tracking_helper.start(uri)
    assert helper is not None
    return helper


def _alembic_version(db: Path) -> str:
    with sqlite3.connect(db) as con:
        return str(con.execute("select version_num from alembic_version").fetchone()[0])


def test_disabled_by_default() -> None:
    assert not tracking_helper.enabled()
    assert tracking_helper.start("sqlite:////nonexistent/mlflow.db") is None


def test_a_new_store_is_made_only_for_results_with_what_logging_here_makes(
    tmp_path: Path, helper_on: Path
) -> None:
    from mlflow import MlflowClient

    db = tmp_path / "store" / "mlflow.db"
    uri = f"sqlite:///{db}"
    helper = _start(uri)
    result_dir = fake_result_dir(tmp_path)
    assert not db.exists()  # prepared as a template elsewhere, never at the target before logging
    report, line = helper.log(str(result_dir), uri, "exp")
    helper.close()
    assert helper.answered and helper.proc.returncode == 0
    assert report is not None and line == report.line()
    assert report.uri == uri and report.experiment == "exp"
    assert set(report.strategy_runs) == {"manual", "random", "rl"} and report.trial_runs == 3
    assert sorted(p.name for p in db.parent.iterdir()) == ["mlartifacts", "mlflow.db"]  # no side file
    assert list(helper_on.iterdir()) == []  # its temporary folder is gone

    # The same store and runs as logging in this process into a store MLflow makes itself:
    # schema version, default experiment, file mode, every run's name, params and metrics.
    direct = tmp_path / "direct.db"
    here = f"sqlite:///{direct}"
    ref, ref_line = try_log(str(result_dir), here, "exp")
    assert ref is not None
    assert line == ref_line.replace(ref.run_id, report.run_id).replace(here, uri)
    assert _alembic_version(db) == _alembic_version(direct)
    assert (db.stat().st_mode & 0o777) == (direct.stat().st_mode & 0o777)
    assert (MlflowClient(tracking_uri=uri).get_experiment("0").artifact_location
            == MlflowClient(tracking_uri=here).get_experiment("0").artifact_location)

    def summary(u: str, exp_id: str) -> list[tuple[str, dict[str, str], dict[str, float]]]:
        runs = MlflowClient(tracking_uri=u).search_runs([exp_id], max_results=100)
        assert all(r.info.status == "FINISHED" for r in runs)
        return sorted((r.info.run_name, dict(r.data.params), dict(r.data.metrics)) for r in runs)

    assert len(summary(uri, report.experiment_id)) == 7
    assert summary(uri, report.experiment_id) == summary(here, ref.experiment_id)

    # An existing store: opened, kept, and the job is already tracked there.
    second = _start(uri)
    again, again_line = second.log(str(result_dir), uri, "exp")
    assert second.answered
    assert again is not None and again.already and again.run_id == report.run_id
    assert again_line.startswith("already tracked")


def test_a_job_that_fails_leaves_no_store(tmp_path: Path, helper_on: Path) -> None:
    db = tmp_path / "mlflow.db"
    helper = _start(f"sqlite:///{db}")
    helper.close()  # the job failed: at whatever point the helper was, nothing is left
    assert helper.proc.returncode is not None
    assert not db.exists() and list(tmp_path.glob(".mlflow.db.*")) == []
    assert list(helper_on.iterdir()) == []


def test_a_store_made_meanwhile_is_used_not_replaced(tmp_path: Path, helper_on: Path) -> None:
    from mlflow import MlflowClient

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    helper = _start(uri)
    mine = MlflowClient(tracking_uri=uri).create_experiment("made-meanwhile")
    report, _ = helper.log(str(fake_result_dir(tmp_path)), uri, None)
    assert report is not None and helper.answered
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment(mine)
    assert exp is not None and exp.name == "made-meanwhile"
    assert len(client.search_runs([report.experiment_id], max_results=100)) == 7


def test_a_dead_helper_falls_back_to_logging_here(tmp_path: Path, helper_on: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    helper = _start(uri)
    helper.proc.kill()
    helper.proc.wait()
    report, line = helper.log(str(fake_result_dir(tmp_path)), uri, None)
    assert not helper.answered
    assert report is not None and line.startswith("tracked: experiment fake-job")


def test_an_unreachable_store_gives_try_logs_line(tmp_path: Path, helper_on: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    uri = f"sqlite:///{blocked / 'mlflow.db'}"
    helper = _start(uri)
    result_dir = fake_result_dir(tmp_path)
    report, line = helper.log(str(result_dir), uri, None)
    assert report is None and helper.answered
    assert line == try_log(str(result_dir), uri, None)[1]
    assert line.startswith("tracking failed:") and "\n" not in line
    assert os.path.isfile(blocked)


# ----------------------------------------------------------------- the pipeline with a helper


@pytest.fixture
def tune_spec(tmp_path: Path) -> tuple[str, Path]:
    """A small job (exact and manual, no Ray) tracked into ``tmp_path / "mlflow.db"``."""
    import yaml

    from envs.synth import generate
    from envs.synth_config import SynthConfig

    res = generate(str(tmp_path / "data"), SynthConfig(n_clips=16, n_classes=2))
    db = tmp_path / "mlflow.db"
    spec = {
        "name": "helped",
        "data": {"scores": res.scores_uri, "ground_truth": res.ground_truth_path,
                 "durations": res.durations_path},
        "space": {"decoders": ["frames"], "kernels": [1, 5]},
        "strategies": [{"name": "manual"}, {"name": "exact", "budget": 6}],
        "folds": 2,
        "bootstrap": 100,
        "output": str(tmp_path / "out"),
        "tracking": {"uri": f"sqlite:///{db}"},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path), db


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch) -> list[tracking_helper.Helper]:
    """Every helper the pipeline starts; the job runs in this process without Ray."""
    import service.tuning.pipeline as pipeline
    import service.tuning.runner as runner

    started: list[tracking_helper.Helper] = []
    real_start, real_run = tracking_helper.start, runner.run_job

    def start(uri: str | None) -> tracking_helper.Helper | None:
        h = real_start(uri)
        if h is not None:
            started.append(h)
        return h

    monkeypatch.setattr(tracking_helper, "start", start)
    def local(spec: object, address: str | None = None, **kw: object) -> object:
        return real_run(spec, use_ray=False, **kw)

    monkeypatch.setattr(pipeline, "run_job", local)
    return started


def test_the_pipeline_tracks_through_its_helper(
    tune_spec: tuple[str, Path], helper_on: Path, helpers: list[tracking_helper.Helper],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from service.cli import main

    path, db = tune_spec
    assert main(["tune", path]) == 0
    assert len(helpers) == 1 and helpers[0].answered and helpers[0].proc.returncode == 0
    assert "tracked: experiment helped, run " in capsys.readouterr().out and db.is_file()


def test_a_failed_pipeline_stops_its_helper_and_leaves_no_store(
    tune_spec: tuple[str, Path], helper_on: Path, helpers: list[tracking_helper.Helper],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import service.tuning.pipeline as pipeline
    from service.cli import main

    def broken(spec: object, **kwargs: object) -> None:
        raise RuntimeError("a worker died")

    monkeypatch.setattr(pipeline, "run_job", broken)
    path, db = tune_spec
    assert main(["tune", path]) == 1
    assert "a worker died" in capsys.readouterr().err
    assert len(helpers) == 1 and helpers[0].proc.returncode is not None and not helpers[0].answered
    assert not db.exists() and list(helper_on.iterdir()) == []
