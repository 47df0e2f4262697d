"""``sedtune tune`` never overwrites what a user owns, and publishes only complete results.

A non-empty output folder is refused before any Ray work (one line naming it, exit 2) unless
``--force``; the run happens in a staging folder beside it, renamed into place when complete,
so a failed or interrupted run leaves the old folder exactly as it was. The job runs here in
this process without Ray (exact and manual), as in ``test_score_formats``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from envs.errors import SedtuneInputError
from service.cli import main
from service.tuning import interrupt
from service.tuning.staging import InPlaceOutput, StagedOutput, check_output


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from envs.synth import generate
    from envs.synth_config import SynthConfig

    res = generate(str(tmp_path_factory.mktemp("guard") / "data"), SynthConfig(n_clips=16, n_classes=2))
    return {"scores": res.scores_uri, "ground_truth": res.ground_truth_path, "durations": res.durations_path}


@pytest.fixture
def no_ray(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The job runs in this process without Ray; returns the log of run_job calls."""
    import service.tuning.pipeline as pipeline
    import service.tuning.runner as runner

    calls: list[str] = []
    real = runner.run_job

    def local(spec: Any, address: str | None = None, **kwargs: Any) -> Any:
        calls.append(spec.output_dir)
        return real(spec, use_ray=False, **kwargs)

    def no_init(*args: Any, **kwargs: Any) -> bool:
        raise AssertionError("Ray must not start")

    monkeypatch.setattr(pipeline, "run_job", local)
    monkeypatch.setattr(runner, "init_ray", no_init)
    return calls


def _spec_file(tmp_path: Path, data: dict[str, str], out: Path) -> str:
    spec = {
        "name": "guard",
        "data": data,
        "space": {"decoders": ["frames"], "kernels": [1, 5]},
        "strategies": [{"name": "manual"}, {"name": "exact", "budget": 6}],
        "folds": 2,
        "bootstrap": 100,
        "output": str(out),
        "tracking": {"enabled": False},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def _users_folder(path: Path) -> Path:
    path.mkdir()
    (path / "mine.txt").write_text("keep me")
    return path


def _untouched(path: Path) -> bool:
    return sorted(os.listdir(path)) == ["mine.txt"] and (path / "mine.txt").read_text() == "keep me"


def _leftovers(parent: Path) -> list[str]:
    return [n for n in os.listdir(parent) if ".sedtune-" in n]


def test_a_non_empty_output_is_refused_before_any_work(tmp_path, data, no_ray, capsys) -> None:
    out = _users_folder(tmp_path / "results")
    code = main(["tune", _spec_file(tmp_path, data, out), "--no-tracking"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and f"output {out}: the folder is not empty" in err and "--force" in err
    assert no_ray == [] and _untouched(out) and _leftovers(tmp_path) == []


def test_a_file_as_output_is_refused_even_with_force(tmp_path, data, no_ray, capsys) -> None:
    out = tmp_path / "results"
    out.write_text("a file of mine")
    assert main(["tune", _spec_file(tmp_path, data, out), "--no-tracking", "--force"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert out.read_text() == "a file of mine" and no_ray == []


def test_force_replaces_the_folder_with_complete_results(tmp_path, data, no_ray, capsys) -> None:
    out = _users_folder(tmp_path / "results")
    assert main(["tune", _spec_file(tmp_path, data, out), "--no-tracking", "--force"]) == 0
    assert "(best parameters: " in capsys.readouterr().out
    assert not (out / "mine.txt").exists()
    assert {"best_params.json", "comparison.json", "artifacts.json", "params", "work"} <= set(os.listdir(out))
    # The job ran in a staging folder beside the output, and nothing of it remains.
    assert len(no_ray) == 1 and os.path.dirname(no_ray[0]) == str(tmp_path)
    assert os.path.basename(no_ray[0]).startswith(".results.sedtune-staging-")
    assert _leftovers(tmp_path) == []
    # Every recorded path is the published one.
    artifacts = json.loads((out / "artifacts.json").read_text())
    assert artifacts
    assert all(p.startswith(str(out) + os.sep) and os.path.exists(p) for p in artifacts.values())
    assert json.loads((out / "spec.resolved.json").read_text())["output"] == str(out)


def test_a_new_or_empty_output_needs_no_force(tmp_path, data, no_ray) -> None:
    (tmp_path / "empty").mkdir()
    for name in ("empty", "new/deeper"):
        assert main(["tune", _spec_file(tmp_path, data, tmp_path / name), "--no-tracking"]) == 0
        assert (tmp_path / name / "best_params.json").is_file()


def test_a_failed_run_leaves_the_old_folder_as_it_was(tmp_path, data, monkeypatch, capsys) -> None:
    import service.tuning.pipeline as pipeline

    def broken(spec: Any, **kwargs: Any) -> Any:
        Path(spec.output_dir, "work").mkdir()
        raise RuntimeError("a worker died")

    monkeypatch.setattr(pipeline, "run_job", broken)
    out = _users_folder(tmp_path / "results")
    assert main(["tune", _spec_file(tmp_path, data, out), "--no-tracking", "--force"]) == 1
    assert "a worker died" in capsys.readouterr().err
    assert _untouched(out) and _leftovers(tmp_path) == []


@pytest.mark.parametrize("swallowed", [False, True], ids=["raised", "swallowed"])
def test_a_signal_during_the_run_writes_nothing(tmp_path, data, monkeypatch, capsys, swallowed) -> None:
    """SIGTERM mid-run: exit 143, one line, the old folder intact. Also when something on the way
    swallows the interrupt and returns a partial result as if complete (what Ray Tune's own
    SIGINT handler does): the pipeline checks for the signal before it writes anything."""
    import service.tuning.pipeline as pipeline
    import service.tuning.runner as runner

    real = runner.run_job
    before = signal.getsignal(signal.SIGTERM)

    def interrupted(spec: Any, address: str | None = None, **kwargs: Any) -> Any:
        assert os.environ.get(interrupt.TUNE_SIGINT_ENV) == "1"  # Tune's own handler is off
        try:
            signal.raise_signal(signal.SIGTERM)
        except interrupt.Interrupted:
            if not swallowed:
                raise
        return real(spec, use_ray=False, **kwargs)

    monkeypatch.setattr(pipeline, "run_job", interrupted)
    out = _users_folder(tmp_path / "results")
    assert main(["tune", _spec_file(tmp_path, data, out), "--no-tracking", "--force"]) == 143
    captured = capsys.readouterr()
    assert captured.err == "sedtune: interrupted (SIGTERM); no results written\n"
    assert "best parameters" not in captured.out
    assert _untouched(out) and _leftovers(tmp_path) == []
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are the caller's again


# ----------------------------------------------------------------------------- the folders


def test_check_output(tmp_path) -> None:
    check_output(str(tmp_path / "new"), force=False)
    check_output(str(tmp_path), force=False)  # empty
    (tmp_path / "x").write_text("x")
    with pytest.raises(SedtuneInputError, match="not empty"):
        check_output(str(tmp_path), force=False)
    check_output(str(tmp_path), force=True)
    with pytest.raises(SedtuneInputError, match="is a file"):
        check_output(str(tmp_path / "x"), force=True)


def test_a_folder_filled_meanwhile_is_not_replaced_without_force(tmp_path) -> None:
    staged = StagedOutput(str(tmp_path / "out"))
    Path(staged.results_dir(), "best_params.json").write_text("{}")
    theirs = _users_folder(tmp_path / "out")  # another run (or the user) got there first
    with pytest.raises(SedtuneInputError, match=r"was filled while this run ran; the results are kept in"):
        staged.publish()
    staged.discard()  # kept: the message names it
    assert _untouched(theirs) and (Path(staged.path) / "best_params.json").is_file()


def test_staged_output_is_published_in_one_rename(tmp_path) -> None:
    staged = StagedOutput(str(tmp_path / "out"), force=True)
    assert staged.run_dir == staged.results_dir() and os.path.dirname(staged.path) == str(tmp_path)
    Path(staged.path, "comparison.json").write_text("{}")
    assert not (tmp_path / "out").exists()
    staged.publish()
    assert os.listdir(tmp_path) == ["out"] and (tmp_path / "out" / "comparison.json").is_file()
    assert oct(os.stat(tmp_path / "out").st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode


def test_in_place_output_moves_the_results_up_when_complete(tmp_path) -> None:
    out = tmp_path / "job"
    folder = InPlaceOutput(str(out))
    (out / "status.json").write_text("{}")
    results = Path(folder.results_dir())
    assert results.parent == out and results.name.startswith(".sedtune-results-")
    (results / "params").mkdir()
    (results / "best_params.json").write_text("{}")
    assert not (out / "best_params.json").exists()
    folder.publish()
    assert sorted(os.listdir(out)) == ["best_params.json", "params", "status.json"]
    folder.results_dir()
    folder.discard()  # after a failure: the staged results go, the status stays
    assert sorted(os.listdir(out)) == ["best_params.json", "params", "status.json"]
