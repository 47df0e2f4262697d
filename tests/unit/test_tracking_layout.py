"""The MLflow run plan, the figures and the tracking failure line (no server, no Ray)."""

from __future__ import annotations

import json
import posixpath
import re
import time
from pathlib import Path

import pytest

from service.results import tracking
from service.results.plots import curve_points, write_plots
from service.results.tracking import resolve_uri, try_log
from service.results.tracking_layout import (
    CURVE_METRIC,
    HEADLINE,
    PER_CLASS,
    TRIAL_FILTER,
    flatten,
    load_result_dir,
    plan_job,
)
from tests.integration.mlflow_support import fake_result_dir
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
README_FIGURE = "tests/benchmarks/figures/f1_vs_evaluations.png"
README_MLFLOW_FIGURES = ("tests/figures/mlflow_runs.png", "tests/figures/mlflow_charts.png")
HEADLINE_NAMES = [
    "heldout_f1",
    "heldout_gain_ci95_high",
    "heldout_gain_ci95_low",
    "heldout_gain_over_manual",
    "tuning_evaluations",
    "tuning_f1",
    "tuning_f1_curve",
    "wall_s",
]
NAME_RE = re.compile(r"^[/\w.\- ]*$")  # MLflow's rule for param, metric and tag names


def _valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name)) and posixpath.normpath(name) == name and not name.startswith("/")


def test_curve_is_on_integer_steps_keeping_the_last_point_of_each_step() -> None:
    traj: list[dict[str, float | None]] = [
        {"evaluations": 0.25, "best_f": 0.1},
        {"evaluations": 1.0, "best_f": 0.2},
        {"evaluations": 1.5, "best_f": float("nan")},
        {"evaluations": 1.75, "best_f": 0.3},
        {"evaluations": 3.0, "best_f": 0.35},
        {"evaluations": 4.0, "best_f": None},
    ]
    assert curve_points(traj) == [(1, 0.2), (2, 0.3), (3, 0.35)]
    assert curve_points([{"evaluations": float(i), "best_f": i / 10} for i in range(1, 6)]) == [
        (i, i / 10) for i in range(1, 6)
    ]


def test_flatten_keys_named_lists_by_name() -> None:
    spec = {
        "name": "j",
        "space": {"kernels": [1, 3], "threshold": {"low": 0.1}},
        "strategies": [{"name": "random", "budget": 10.0, "options": {}}],
        "output": None,
    }
    assert flatten(spec) == {
        "name": "j",
        "space.kernels": "[1, 3]",
        "space.threshold.low": "0.1",
        "strategies.random.name": "random",
        "strategies.random.budget": "10.0",
        "strategies.random.options": "{}",
        "output": "null",
    }


def test_plan_layout(tmp_path: Path) -> None:
    files = load_result_dir(str(fake_result_dir(tmp_path)))
    plan, skipped = plan_job(files, {})
    assert plan.params == flatten(files.spec)
    assert plan.tags["sedtune.role"] == "job" and plan.tags["job_id"] == "0123abcd4567"
    assert skipped == ["rl/missing (/nonexistent/elsewhere/missing.bin: not found)"]
    kids = {c.name: c for c in plan.children}
    assert list(kids) == ["manual", "random", "rl"]
    for name, kid in kids.items():
        assert kid.tags["strategy"] == name
        for tag in (
            "job_id",
            "dataset_fingerprint",
            "seed",
            "sedtune_version",
            "ray_version",
            "sed_eval_version",
        ):
            assert kid.tags[tag], tag
        metrics = {k: v for k, v, s in kid.metrics if s == 0}
        assert metrics["manual_heldout_f1"] == 0.4
        for part in ("tuning", "heldout"):
            for fig in ("f1", "precision", "recall"):
                for c in ("Dog", "Alarm _bell_"):
                    assert f"{PER_CLASS}/{part}/{c}/{fig}" in metrics, (name, part, c, fig)
        # the chart view's sections (the name up to the last "/"): the headline first (and its
        # held-out F1 first within it), then only per-class sections; the rest has no "/"
        names = sorted({k for k, _, _ in kid.metrics})
        head = [k.removeprefix(f"{HEADLINE}/") for k in names if k.startswith(f"{HEADLINE}/")]
        assert head == HEADLINE_NAMES, name
        sections = sorted({k.rsplit("/", 1)[0] for k in names if "/" in k})
        assert sections[0] == HEADLINE and all(x.startswith(f"{PER_CLASS}/") for x in sections[1:])
        assert sorted(sections, key=str.casefold)[0] == HEADLINE  # a case-blind sort agrees
        for key in [*kid.params, *metrics, *kid.tags]:
            assert _valid_name(key), key
    rl = kids["rl"]
    # the job's selection (robust) unprefixed, the others prefixed; adaptive has metrics only
    assert rl.params["Dog/threshold"] == "0.25" and rl.params["naive.Dog/threshold"] == "0.2"
    assert rl.params["untrained.Dog/median_filter_frames"] == "1"
    assert not any(k.startswith("adaptive.") for k in rl.params)
    rl_metrics = {k: v for k, v, _ in rl.metrics}
    assert rl_metrics[f"{HEADLINE}/heldout_f1"] == 0.42 and rl_metrics["adaptive.heldout_f1"] == 0.44
    assert rl_metrics[f"{HEADLINE}/heldout_gain_ci95_low"] == -0.05
    assert rl_metrics[f"{HEADLINE}/tuning_evaluations"] == 2.5 and rl_metrics["heldout_f1_std"] == 0.0
    assert rl_metrics[f"{PER_CLASS}/naive.heldout/Dog/f1"] == 0.49
    assert not any(k.startswith(f"{HEADLINE}/") for k in rl_metrics if "naive" in k or "adaptive" in k)
    # the job's run: the recommendation (rl/robust) and the manual reference, outside the headline
    assert {k: v for k, v, _ in plan.metrics} == {
        "heldout_f1": 0.42,
        "heldout_gain_over_manual": 0.02,
        "tuning_f1": 0.4,
        "manual_tuning_f1": 0.38,
        "manual_heldout_f1": 0.4,
        "wall_s": 12.5,
    }
    assert [(s, v) for k, v, s in rl.metrics if k == CURVE_METRIC] == [(1, 0.36), (2, 0.41), (3, 0.41)]
    assert (str(tmp_path / "result/work/split0/rl/policy"), "policy") in rl.artifacts
    assert kids["manual"].params["Dog/threshold"] == "0.5"
    # trials: children of their strategy's run, only where trials.<strategy>.json exists
    trials = kids["random"].children
    assert [t.name for t in trials] == ["random-trial-0000", "random-trial-0001", "random-trial-0002"]
    assert trials[2].params["Dog/median_filter_frames"] == "5"
    assert trials[2].metrics == [("tuning_f1", 0.4, 0)]  # not in the headline section
    assert all(t.tags["sedtune.role"] == "trial" for t in trials)
    assert TRIAL_FILTER == "tags.sedtune.role != 'trial'"
    assert not kids["rl"].children and not kids["manual"].children


def test_plan_params_are_deterministic(tmp_path: Path) -> None:
    a, _ = plan_job(load_result_dir(str(fake_result_dir(tmp_path / "a"))), {})
    time.sleep(0.01)
    b, _ = plan_job(load_result_dir(str(fake_result_dir(tmp_path / "b"))), {})
    assert a.params == b.params
    assert [c.params for c in a.children] == [c.params for c in b.children]


def _png_stats(path: Path) -> tuple[int, int, int]:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        colors = im.convert("RGB").getcolors(maxcolors=1 << 20) or []
        return im.width, im.height, len(colors)


def test_figures_are_real_pngs(tmp_path: Path) -> None:
    d = fake_result_dir(tmp_path)
    comparison = json.loads((d / "comparison.json").read_text())
    paths = write_plots(comparison, str(d / "plots"))
    assert set(paths) == {
        "f1_vs_evaluations",
        "class_f1",
        "class_f1/manual",
        "class_f1/random",
        "class_f1/rl",
    }
    for p in paths.values():
        w, h, colors = _png_stats(Path(p))
        assert w >= 500 and h >= 400 and colors > 50 and Path(p).stat().st_size > 10_000, p


def test_readme_shows_a_figure() -> None:
    assert README_FIGURE in (ROOT / "README.md").read_text()
    w, h, colors = _png_stats(ROOT / README_FIGURE)
    assert w >= 500 and h >= 300 and colors > 50


def test_readme_shows_the_mlflow_ui_and_the_trial_filter() -> None:
    readme = (ROOT / "README.md").read_text()
    assert TRIAL_FILTER in readme
    for figure in README_MLFLOW_FIGURES:
        assert figure in readme, figure
        w, h, colors = _png_stats(ROOT / figure)
        assert w >= 1000 and h >= 600 and colors > 50, figure


def test_unreachable_server_gives_one_line_quickly(tmp_path: Path) -> None:
    d = fake_result_dir(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    t0 = time.perf_counter()
    report, line = try_log(str(d), uri, None)
    assert report is None
    assert time.perf_counter() - t0 < 20
    assert "\n" not in line
    assert line.startswith(f"tracking failed: cannot reach {uri} (")
    assert f"results are in {d}" in line and f"sedtune log {d} --tracking-uri {uri}" in line
    assert (d / "plots" / "f1_vs_evaluations.png").is_file()  # figures are written even so


def test_default_uri_is_sqlite_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert resolve_uri("http://h:5000") == "http://h:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert resolve_uri(None) == "http://env:5000"


@pytest.mark.parametrize(
    ("n_params", "n_metrics", "calls"),
    [(0, 0, 0), (3, 0, 1), (0, 5, 1), (100, 900, 1), (101, 10, 2), (250, 1801, 3)],
)
def test_batches_stay_within_mlflows_limits_and_lose_nothing(
    n_params: int, n_metrics: int, calls: int
) -> None:
    params, metrics = list(range(n_params)), list(range(-n_metrics, 0))
    batches = list(tracking._batches(params, metrics))
    assert len(batches) == calls
    assert all(len(p) <= 100 and len(m) + len(p) <= 1000 for p, m in batches)
    assert [x for p, _ in batches for x in p] == params
    assert [x for _, m in batches for x in m] == metrics
