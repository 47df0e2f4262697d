"""The service's small parts: settings, cron, entrypoint, progress file, drift, jobrun's failure paths."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime

import pytest

from envs.errors import SedtuneInputError
from service.results.status import ProgressFile, read_status
from service.server.cron import CronSchedule
from service.server.drift import compute_drift
from service.server.entrypoint import build_entrypoint
from service.server.settings import load_settings

SPEC = {"name": "p", "data": {"scores": "/d/s", "ground_truth": "/d/g.tsv"},
        "strategies": [{"name": "manual"}]}


def test_settings_file_then_environment(tmp_path) -> None:
    cfg = tmp_path / "sedtune.yaml"
    cfg.write_text(f"data_dir: {tmp_path}/svc\ndata_roots: [/srv/a, /srv/b]\nallowed_schemes: S3,gs\n"
                   "ray_address: http://head:8265\nscheduler_tick_s: 2\ncheck_data: false\n")
    s = load_settings(str(cfg), {"SEDTUNE_RAY_ADDRESS": "http://other:8265", "SEDTUNE_TOKENS": "t"})
    assert s.data_roots == ("/srv/a", "/srv/b") and s.allowed_schemes == ("s3", "gs")
    assert s.ray_address == "http://other:8265" and s.scheduler_tick_s == 2.0 and not s.check_data
    assert s.db_url == f"sqlite:///{tmp_path}/svc/sedtune.db"
    assert s.output_roots == (f"{tmp_path}/svc/outputs",)
    # the embedded MLflow store is the service's, out of the jobs' output tree
    assert s.tracking_uri == f"sqlite:///{tmp_path}/svc/outputs/.sedtune/mlflow.db"
    assert s.max_body_bytes == 1024 * 1024 and s.max_spec_bytes == 512 * 1024
    s = load_settings(None, {"SEDTUNE_MAX_BODY_BYTES": "2048", "SEDTUNE_MAX_SPEC_BYTES": "1024",
                             "SEDTUNE_DATA_DIR": str(tmp_path)})
    assert s.max_body_bytes == 2048 and s.max_spec_bytes == 1024


@pytest.mark.parametrize(("text", "msg"), [
    ("nope: 1\n", "unknown keys ['nope']"),
    ("- a\n", "must be a mapping"),
    ("scheduler_tick_s: soon\n", "scheduler_tick_s must be a number of seconds"),
    ("reconcile_interval_s: 0\n", "reconcile_interval_s must be > 0"),
    ("check_data: maybe\n", "check_data must be true or false"),
    ("max_body_bytes: lots\n", "max_body_bytes must be a whole number of bytes"),
    ("max_spec_bytes: 0\n", "max_spec_bytes must be > 0 bytes"),
])
def test_bad_settings(tmp_path, text, msg) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    with pytest.raises(SedtuneInputError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        load_settings(str(cfg), {})


def test_cron_dst_and_fires() -> None:
    c = CronSchedule.parse("30 2 * * *", "Europe/Paris")
    # spring forward: 02:30 does not exist on 2026-03-29, it runs at 03:00 local (01:00 UTC)
    assert c.next_after(datetime(2026, 3, 28, 12, tzinfo=UTC)) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert c.next_after(datetime(2026, 7, 1, tzinfo=UTC)) == datetime(2026, 7, 1, 0, 30, tzinfo=UTC)
    m = CronSchedule.parse("*/15  * * * *", "UTC")
    assert m.expr == "*/15 * * * *"
    fires = list(m.fires_between(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC)))
    assert len(fires) == 5 and fires[0] == datetime(2026, 1, 1, tzinfo=UTC)
    assert m.last_at_or_before(datetime(2026, 1, 1, 0, 14, tzinfo=UTC)) == datetime(2026, 1, 1, tzinfo=UTC)


def test_entrypoint_round_trip_and_no_injection() -> None:
    sha = "0" * 64
    ep = build_entrypoint("/opt/py/bin/python", "j-0123abcd", "/out/.sedtune/jobs/j-0123abcd.json", sha)
    assert ep == ("/opt/py/bin/python -m service.jobrun --job-id j-0123abcd "
                  f"--spec-file /out/.sedtune/jobs/j-0123abcd.json --spec-sha256 {sha}")
    assert "'/a b/$(id).json'" in build_entrypoint("python", "j-0123abcd", "/a b/$(id).json", sha)
    with pytest.raises(ValueError, match="sha256 must be"):
        build_entrypoint("python", "j-0123abcd", "/f.json", "; rm -rf /")
    for bad in ("j-1; rm -rf /", "$(id)", "J-UPPER", "ab"):
        with pytest.raises(ValueError, match="job id must match"):
            build_entrypoint("python", bad, "/f.json", sha)


def test_progress_file(tmp_path) -> None:
    pf = ProgressFile(str(tmp_path / "o"), "j-1", [("exact", 10.0), ("random", None)], min_interval_s=60)
    cb = pf.factory("exact (split 2/3)", 10.0)
    cb(5.0)  # throttled: not written yet
    assert read_status(str(tmp_path / "o"))["strategies"]["exact"]["evaluations"] == 0.0
    pf.strategy_done("exact", 0.5)
    pf.strategy_done("exact", 0.4)  # the best over splits is kept
    doc = read_status(str(tmp_path / "o"))
    assert doc["strategies"]["exact"] == {"state": "done", "split": "2/3", "evaluations": 5.0, "budget": 10.0,
                                          "fraction": 1.0, "best_tuning_f": 0.5}
    assert doc["best_tuning_f"] == 0.5 and doc["strategies"]["random"]["state"] == "pending"
    copy = pickle.loads(pickle.dumps(cb))  # Ray Tune pickles its callbacks
    copy(7.0)
    assert read_status(str(tmp_path / "missing")) is None
    (tmp_path / "o" / "status.json").write_text("{broken")
    assert read_status(str(tmp_path / "o")) is None


def test_drift() -> None:
    p = {"Dog": {"median_filter_frames": 7, "threshold": 0.4, "threshold_off": None},
         "Cat": {"threshold": 0.5}}
    c = {"Dog": {"median_filter_frames": 9, "threshold": 0.35, "threshold_off": None},
         "Bird": {"threshold": 0.2}}
    d = compute_drift({"best_params": p, "heldout_f": 0.5}, {"best_params": c, "heldout_f": 0.45},
                      "j-a", "j-b")
    assert d["heldout_f"] == {"previous": 0.5, "current": 0.45, "delta": -0.05}
    assert d["classes"]["Dog"]["median_filter_frames"] == {"previous": 7, "current": 9, "delta": 2}
    assert d["classes"]["Dog"]["threshold"]["delta"] == -0.05 and d["max_abs_threshold_delta"] == 0.05
    assert d["classes"]["Dog"]["threshold_off"]["delta"] is None
    assert d["changed_classes"] == ["Dog"]
    assert d["added_classes"] == ["Bird"] and d["removed_classes"] == ["Cat"]


def test_drift_across_decoders() -> None:
    box = {"decoder": "boxes", "median_filter_frames": 1, "threshold": 0.3, "fill_gap_s": 0.0,
           "min_duration_s": 0.0, "step_filter_s": 0.48, "merge_abs": 0.2, "merge_rel": None,
           "confidence": "mean"}
    # "Dog" from a sedtune.params/1 summary (no decoder: frames), unchanged: not a change.
    old_dog = {"median_filter_frames": 7, "threshold": 0.4, "fill_gap_s": 0.0, "min_duration_s": 0.0,
               "threshold_off": None}
    p = {"Dog": old_dog, "Cat": {**old_dog, "threshold": 0.9}, "Bird": box}
    c = {"Dog": {"decoder": "frames", **old_dog}, "Cat": box, "Bird": {**box, "step_filter_s": 0.64}}
    d = compute_drift({"best_params": p}, {"best_params": c}, "j-a", "j-b")
    assert d["changed_classes"] == ["Bird", "Cat"]
    assert d["decoder_changes"] == {"Cat": {"previous": "frames", "current": "boxes"}}
    dog, cat, bird = d["classes"]["Dog"], d["classes"]["Cat"], d["classes"]["Bird"]
    assert dog["decoder"] == {"previous": "frames", "current": "frames", "delta": None}
    assert list(dog) == ["decoder", "median_filter_frames", "threshold", "fill_gap_s", "min_duration_s",
                         "threshold_off"]
    # A decoder change shows both decoders' fields; each side has null for the other's.
    assert set(cat) == {"decoder", "median_filter_frames", "threshold", "fill_gap_s", "min_duration_s",
                        "threshold_off", "step_filter_s", "merge_abs", "merge_rel", "confidence"}
    assert cat["step_filter_s"] == {"previous": None, "current": 0.48, "delta": None}
    assert cat["median_filter_frames"]["delta"] == -6
    assert "threshold_off" not in bird and bird["step_filter_s"]["delta"] == 0.16
    # A frame threshold and a box-confidence threshold do not compare: Cat's 0.6 is left out.
    assert d["max_abs_threshold_delta"] == 0.0


def test_jobrun_refuses_bad_input_with_one_line(tmp_path, capsys) -> None:
    from service.jobrun import main

    def spec_file(doc: dict, name: str) -> str:
        path = tmp_path / name
        path.write_text(json.dumps(doc))
        return str(path)

    assert main(["--job-id", "BAD ID", "--spec-file", spec_file(SPEC, "a.json")]) == 2
    assert "--job-id must match" in capsys.readouterr().err
    no_strategies = spec_file({**SPEC, "strategies": []}, "b.json")
    assert main(["--job-id", "j-00000001", "--spec-file", no_strategies]) == 2
    assert "strategies" in capsys.readouterr().err
    # the data is missing: refused before any Ray work, the status file says why
    out = tmp_path / "out"
    spec = {**SPEC, "data": {"scores": str(tmp_path / "none"), "ground_truth": str(tmp_path / "g.tsv")},
            "output": str(out)}
    assert main(["--job-id", "j-00000002", "--spec-file", spec_file(spec, "c.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sedtune job j-00000002: error: data.scores") and "\n" not in err
    doc = read_status(str(out))
    assert doc["state"] == "failed" and doc["error"].startswith("data.scores")
