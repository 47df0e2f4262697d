"""Invalid job specs are refused before any Ray work, with the field path in the message."""

from __future__ import annotations

import json

import pytest
import yaml

from service.cli import main


@pytest.fixture
def data(tmp_path):
    from envs.synth import generate
    from envs.synth_config import SynthConfig

    return generate(str(tmp_path / "d"), SynthConfig(n_clips=12, n_classes=2, seed=0))


def _spec(data, **over):
    spec = {
        "name": "t",
        "data": {
            "scores": data.scores_uri,
            "ground_truth": data.ground_truth_path,
            "durations": data.durations_path,
        },
        "strategies": [{"name": "exact", "budget": 22}],
    }
    for k, v in over.items():
        spec[k] = v
    return spec


def _run(tmp_path, spec, capsys, monkeypatch, suffix=".yaml"):
    import service.tuning.runner as runner

    def no_ray(*a, **k):  # any attempt to start Ray fails the test
        raise AssertionError("Ray was started for an invalid spec")

    monkeypatch.setattr(runner, "init_ray", no_ray)
    path = tmp_path / f"spec{suffix}"
    path.write_text(json.dumps(spec) if suffix == ".json" else yaml.safe_dump(spec))
    code = main(["tune", str(path), "--no-tracking"])
    err = capsys.readouterr().err.strip()
    return code, err


CASES = [
    ("unknown strategy", {"strategies": [{"name": "genetic"}]}, "strategies[0].name"),
    ("budget zero", {"strategies": [{"name": "random", "budget": 0}]}, "strategies[0].budget"),
    ("budget negative", {"strategies": [{"name": "exact", "budget": -3}]}, "strategies[0].budget"),
    ("budget 1e12", {"strategies": [{"name": "random", "budget": 1e12}]}, "strategies[0].budget"),
    ("budget inf", {"strategies": [{"name": "random", "budget": float("inf")}]}, "strategies[0].budget"),
    ("even kernel", {"space": {"kernels": [1, 4]}}, "space.kernels"),
    ("unknown decoder", {"space": {"decoders": ["frames", "bumps"]}}, "space.decoders[1]"),
    ("no decoder", {"space": {"decoders": []}}, "space.decoders"),
    ("step filter 0", {"space": {"boxes": {"step_filter_s": [0.32, 0.0]}}}, "space.boxes.step_filter_s"),
    ("merge abs > 1", {"space": {"boxes": {"merge": [{"abs": 1.5}]}}}, "space.boxes.merge[0].abs"),
    ("merge rel <= 1", {"space": {"boxes": {"merge": [{"rel": 1.0}]}}}, "space.boxes.merge[0].rel"),
    ("merge unknown field", {"space": {"boxes": {"merge": [{"ratio": 2}]}}}, "space.boxes.merge[0].ratio"),
    ("unknown confidence", {"space": {"boxes": {"confidence": ["median"]}}}, "space.boxes.confidence[0]"),
    ("even box kernel", {"space": {"boxes": {"kernels": [2]}}}, "space.boxes.kernels"),
    ("empty kernels", {"space": {"kernels": []}}, "space.kernels"),
    ("empty gaps", {"space": {"fill_gap_s": []}}, "space.fill_gap_s"),
    ("reversed thresholds", {"space": {"threshold": {"low": 0.8, "high": 0.2}}}, "space.threshold"),
    ("held-out 1.0", {"heldout": {"fraction": 1.0}}, "heldout.fraction"),
    ("held-out 0", {"heldout": {"fraction": 0}}, "heldout.fraction"),
    ("no strategies", {"strategies": []}, "strategies"),
    ("twice", {"strategies": [{"name": "exact"}, {"name": "exact"}]}, "strategies"),
    ("unknown field", {"colour": "red"}, "colour"),
    (
        "bad option",
        {"strategies": [{"name": "exact", "options": {"bogus": 1}}]},
        "strategies[0].options.bogus",
    ),
    ("exact budget below settings", {"strategies": [{"name": "exact", "budget": 3}]}, "strategies[0].budget"),
    ("random budget below 1", {"strategies": [{"name": "random", "budget": 0.5}]}, "strategies[0].budget"),
    ("rl budget below read-outs", {"strategies": [{"name": "rl", "budget": 1}]}, "strategies[0].budget"),
    ("bad rl option", {"strategies": [{"name": "rl", "options": {"lr": 0}}]}, "strategies[0].options.lr"),
    ("bad warm start", {"strategies": [{"name": "manual"}, {"name": "bayes", "options": {"warm_start": {}}}]},
     "strategies[1].options.warm_start"),
    ("no name", {"strategies": [{"budget": 3}]}, "strategies[0].name"),
]


@pytest.mark.parametrize("label,over,path", CASES, ids=[c[0] for c in CASES])
def test_structural_errors_name_the_field(tmp_path, data, capsys, monkeypatch, label, over, path):
    code, err = _run(tmp_path, _spec(data, **over), capsys, monkeypatch)
    assert code == 2, err
    assert err.startswith("sedtune: error:") and "\n" not in err and "Traceback" not in err
    assert path in err, err


def test_unknown_class(tmp_path, data, capsys, monkeypatch):
    spec = _spec(data)
    spec["data"]["classes"] = [data.classes[0], "Unicorn"]
    code, err = _run(tmp_path, spec, capsys, monkeypatch)
    assert code == 2 and "data.classes[1]" in err and "Unicorn" in err


@pytest.mark.parametrize("field", ["scores", "ground_truth", "durations"])
def test_missing_files(tmp_path, data, capsys, monkeypatch, field):
    spec = _spec(data)
    spec["data"][field] = str(tmp_path / "nowhere")
    code, err = _run(tmp_path, spec, capsys, monkeypatch)
    assert code == 2 and f"data.{field}" in err and "nowhere" in err


def test_missing_heldout_set(tmp_path, data, capsys, monkeypatch):
    spec = _spec(
        data, heldout={"data": {"scores": str(tmp_path / "x"), "ground_truth": data.ground_truth_path}}
    )
    code, err = _run(tmp_path, spec, capsys, monkeypatch)
    assert code == 2 and "heldout.data.scores" in err


def test_malformed_yaml_and_missing_spec(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert main(["tune", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.yaml" in err and "\n" not in err
    assert main(["tune", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml" in capsys.readouterr().err


def test_json_spec_accepted_structurally(tmp_path, data, capsys, monkeypatch):
    code, err = _run(tmp_path, _spec(data, strategies=[{"name": "genetic"}]), capsys, monkeypatch, ".json")
    assert code == 2 and "strategies[0].name" in err


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    """Ray workers (Tune trials) run in other directories: local paths must be absolute."""
    from service.tuning.spec import parse_spec

    monkeypatch.chdir(tmp_path)
    spec = parse_spec({
        "name": "rel",
        "data": {"scores": "d/scores", "ground_truth": "d/gt.tsv", "durations": None},
        "heldout": {"data": {"scores": "s3://bucket/held", "ground_truth": "h/gt.tsv"}},
        "strategies": [{"name": "manual"}],
    })
    out = spec.with_absolute_paths()
    assert out.data.scores == str(tmp_path / "d/scores")
    assert out.data.ground_truth == str(tmp_path / "d/gt.tsv")
    assert out.data.durations is None
    assert out.heldout.data.scores == "s3://bucket/held"
    assert out.heldout.data.ground_truth == str(tmp_path / "h/gt.tsv")
    assert out.output == str(tmp_path / "sedtune-out" / "rel")
