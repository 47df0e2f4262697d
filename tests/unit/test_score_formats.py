"""Scores in any supported form wherever a score set is expected (issue 13).

``evaluate``, ``apply`` and ``tune`` (``data.scores`` and ``heldout.data.scores``) take a
sed_scores_eval TSV folder or an ``.npz`` directly and give the same figures as after an
explicit ``sedtune import``; a bad file gives import's one-line error naming it; Ray workers
get the cached Parquet set's path; the dataset fingerprint works. Real DCASE outputs from
../shared/data: small subsets copied into ``tmp_path`` and full sets for the golden figures.
The cache itself: test_score_cache.py.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import envs.scorecache as sc
from envs.errors import SedtuneInputError
from envs.fingerprint import dataset_fingerprint
from envs.problem import DataRef
from envs.scoreset import ScoreSet
from service.cli import main
from tests.unit.score_formats_support import (
    DESED,
    SAMPLE,
    cache_entries,
    cache_entries_of,
    cache_fixture,  # noqa: F401  (the autouse `cache` fixture)
    conversions_fixture,  # noqa: F401  (the `conversions` fixture)
    evaluate_json,
    imported,
    make_subset,
    run_cli,
    subset_fixture,  # noqa: F401  (the `subset` fixture)
)

# ---------------------------------------------------------------------------------------------
# The same figures as after an explicit import


def test_evaluate_takes_a_tsv_folder(tmp_path, capsys, subset, conversions) -> None:
    extra = ("--median-filter-frames", "5", "--threshold", "0.4", "--min-duration-s", "0.1")
    direct = evaluate_json(capsys, subset["scores"], subset, *extra)
    assert conversions == [subset["scores"]]
    explicit = evaluate_json(capsys, imported(tmp_path, subset["scores"]), subset, *extra)
    assert direct == explicit
    assert direct["macro_f_measure"] > 0.1


def test_evaluate_takes_an_npz(tmp_path, capsys, subset, conversions) -> None:
    ref = ScoreSet.open(imported(tmp_path, subset["scores"], "ref"))
    matrices = ref.read_matrices()
    names = sorted(matrices)
    frames = min(m.shape[0] for m in matrices.values())  # an .npz holds one frame count
    path = tmp_path / "scores.npz"
    np.savez(path, scores=np.stack([matrices[n][:frames] for n in names]), filenames=np.array(names),
             classes=np.array(ref.classes), frame_hop_s=np.float64(ref.frame_hop_s))
    direct = evaluate_json(capsys, str(path), subset)
    assert conversions == [str(path)]
    assert direct == evaluate_json(capsys, imported(tmp_path, str(path)), subset)


def test_apply_takes_a_tsv_folder(tmp_path, capsys, subset, conversions) -> None:
    params = tmp_path / "params.json"
    classes = ScoreSet.open(subset["scores"]).classes
    params.write_text(json.dumps({
        "format": "sedtune.params/1", "frame_hop_s": 0.064,
        "classes": {c: {"median_filter_frames": 7, "threshold": 0.3 + 0.05 * i}
                    for i, c in enumerate(classes)},
    }))
    for name, scores in (("direct", subset["scores"]), ("explicit", imported(tmp_path, subset["scores"]))):
        run_cli(capsys, ["apply", "--scores", scores, "--params", str(params),
                         "--durations", subset["durations"], "--out", str(tmp_path / f"{name}.tsv")])
    direct = (tmp_path / "direct.tsv").read_text()
    assert direct == (tmp_path / "explicit.tsv").read_text()
    assert direct.count("\n") > 20
    assert conversions == [subset["scores"]]


def _tune_json(
    tmp_path: Path, capsys, monkeypatch, data: dict[str, str], heldout: dict[str, str], tag: str
) -> Any:
    import service.tuning.pipeline as pipeline
    import service.tuning.runner as runner

    real = runner.run_job

    def local(spec, address=None, **kwargs):  # exact and manual run without Ray
        return real(spec, use_ray=False, **kwargs)

    monkeypatch.setattr(pipeline, "run_job", local)
    spec = {
        "name": f"formats-{tag}",
        "data": data,
        "heldout": {"data": heldout},
        "space": {"decoders": ["frames"], "kernels": [1, 7]},
        "strategies": [{"name": "manual"}, {"name": "exact"}],
        "folds": 3,
        "bootstrap": 100,
        "output": str(tmp_path / f"out-{tag}"),
    }
    path = tmp_path / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = json.loads(run_cli(capsys, ["tune", str(path), "--no-tracking", "--json"]))
    for key in ("job", "job_id", "wall_s", "versions"):
        out.pop(key)
    for row in out["rows"]:
        row.pop("wall_s")
        for point in row["trajectory"]:
            point.pop("wall_s")
    return out


def test_tune_takes_tsv_folders_in_data_and_heldout(tmp_path, capsys, monkeypatch, conversions) -> None:
    tuning = make_subset(tmp_path / "tuning", 30)
    held = make_subset(tmp_path / "held", 30, skip=600)
    direct = _tune_json(tmp_path, capsys, monkeypatch, tuning, held, "direct")
    assert sorted(conversions) == sorted([tuning["scores"], held["scores"]])
    explicit = _tune_json(
        tmp_path, capsys, monkeypatch,
        {**tuning, "scores": imported(tmp_path, tuning["scores"], "tuning-set")},
        {**held, "scores": imported(tmp_path, held["scores"], "held-set")},
        "explicit",
    )
    assert direct == explicit  # the dataset fingerprint included
    assert len(conversions) == 2


def test_golden_full_set_from_its_tsv_folder(capsys) -> None:
    """The whole 1168-clip DCASE 2020 baseline, straight from ../shared/data: README's 0.3401."""
    data = {"ground_truth": str(DESED / "ground_truth.tsv"), "durations": str(DESED / "durations.tsv")}
    out = evaluate_json(capsys, str(DESED / "dcase2020-baseline" / "scores"), data)
    assert round(out["macro_f_measure"], 4) == 0.3401
    sample = {"ground_truth": str(SAMPLE / "ground_truth.tsv"), "durations": str(SAMPLE / "durations.tsv")}
    out = evaluate_json(capsys, str(SAMPLE / "baseline2-run1" / "scores"), sample)
    assert round(out["macro_f_measure"], 4) == 0.4470


# ---------------------------------------------------------------------------------------------
# Bad input


def test_bad_file_gives_imports_error_and_caches_nothing(tmp_path, capsys, subset, cache) -> None:
    folder = Path(subset["scores"])
    victim = sorted(folder.iterdir())[3]
    lines = victim.read_text().splitlines()
    fields = lines[2].split("\t")
    fields[4] = "0.5x"
    lines[2] = "\t".join(fields)
    victim.write_text("\n".join(lines) + "\n")
    out = tmp_path / "events.tsv"
    params = tmp_path / "p.json"
    params.write_text("{}")
    commands = {
        "evaluate": ["evaluate", "--scores", str(folder), "--ground-truth", subset["ground_truth"]],
        "apply": ["apply", "--scores", str(folder), "--params", str(params), "--out", str(out)],
        "import": ["import", str(folder), str(tmp_path / "imp")],
    }
    errors = {}
    for name, argv in commands.items():
        assert main(argv) == 2, name
        out_text, err = capsys.readouterr()
        err = err.strip()
        assert out_text == "" and "\n" not in err and "Traceback" not in err, err
        assert err.startswith("sedtune: error:") and victim.name in err and "line 3" in err, err
        assert "'0.5x' is not a number" in err, err
        errors[name] = err
    assert errors["evaluate"] == errors["apply"] == errors["import"]
    assert cache_entries_of(cache) == []
    assert not [n for n in cache_entries(cache) if n.startswith((".tmp-", ".trash-"))]


def test_bad_file_in_a_job_spec_names_the_field_and_the_file(tmp_path, capsys, subset, monkeypatch) -> None:
    import service.tuning.runner as runner

    def no_ray(*a, **k):
        raise AssertionError("Ray was started for an invalid spec")

    monkeypatch.setattr(runner, "init_ray", no_ray)
    held = make_subset(tmp_path / "held", 20, skip=600)
    victim = sorted(Path(held["scores"]).iterdir())[0]
    victim.write_text("onset\toffset\tDog\n0.0\t0.064\t1.5\n")
    spec = {"name": "bad", "data": subset, "heldout": {"data": held}, "strategies": [{"name": "manual"}]}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["tune", str(path), "--no-tracking"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sedtune: error: heldout.data.scores: ") and victim.name in err, err
    assert "\n" not in err


# ---------------------------------------------------------------------------------------------
# Forms, workers, fingerprint


def test_forms_are_told_apart(tmp_path, subset) -> None:
    parquet = imported(tmp_path, subset["scores"])
    assert sc.score_source(parquet) == sc.ScoreSource("parquet", parquet)
    assert sc.score_source(subset["scores"]) == sc.ScoreSource("tsv", subset["scores"])
    assert sc.score_source(f"file://{subset['scores']}") == sc.ScoreSource("tsv", subset["scores"])
    assert sc.score_source("s3://bucket/set").kind == "parquet"
    assert sc.score_source(str(tmp_path / "nowhere")).kind == "parquet"
    assert sc.resolve_scores(parquet) == parquet
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"")
    assert sc.score_source(str(npz)) == sc.ScoreSource("npz", str(npz))
    one = next(Path(subset["scores"]).iterdir())
    with pytest.raises(SedtuneInputError, match="single TSV file"):
        sc.score_source(str(one))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SedtuneInputError, match=r"no \.parquet shards"):
        ScoreSet.open(str(tmp_path / "empty"))


def test_workers_get_the_cached_path_and_never_convert(subset, cache, conversions, monkeypatch) -> None:
    from envs import problem

    ref = DataRef(subset["scores"], subset["ground_truth"], subset["durations"])
    [key] = cache_entries_of(cache)
    assert ref.scores == str(cache / key)
    assert conversions == [subset["scores"]]
    shipped = pickle.loads(pickle.dumps(ref))  # what a Ray worker gets
    assert shipped.scores == str(cache / key)

    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("a worker converted the scores again")

    monkeypatch.setattr(sc, "import_source", refuse)
    problem._load_cached.cache_clear()
    data = shipped.load()
    assert len(data.filenames) == len(os.listdir(subset["scores"]))
    assert data.scores(data.classes[0]).values.size > 0
    # a reference built again from the resolved path (as rl_training does on a worker)
    assert DataRef(shipped.scores, ref.ground_truth, ref.durations).scores == ref.scores


def test_fingerprint_of_a_tsv_folder(tmp_path, subset) -> None:
    parts = [(subset["scores"], subset["ground_truth"], subset["durations"])]
    fp = dataset_fingerprint(parts)
    explicit = imported(tmp_path, subset["scores"])
    assert fp == dataset_fingerprint([(explicit, subset["ground_truth"], subset["durations"])])
    sc._DIGESTS.clear()
    sc._VALIDATED.clear()
    assert dataset_fingerprint(parts) == fp
    victim = sorted(Path(subset["scores"]).iterdir())[0]
    rows = victim.read_text().splitlines()
    victim.write_text("\n".join(rows[:-1]) + "\n")  # one frame fewer
    assert dataset_fingerprint(parts) != fp
