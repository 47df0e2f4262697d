"""Done-when: `sedtune apply` writes events whose sed_eval macro F1 equals `sedtune evaluate`."""

from __future__ import annotations

import csv
import json

import pytest

from envs.events import ClassEvents
from envs.groundtruth import read_ground_truth
from envs.metrics.sed_eval_oracle import sed_eval_event_counts
from envs.params import ClassParams, ParamFile
from envs.scoreset import ScoreSet
from service.cli import main


@pytest.mark.parametrize("name", ["dcase2023-eval-sample", "dcase2021-baseline-student"])
def test_apply_events_score_like_evaluate(shared_sets, tmp_path, capsys, name):
    s = shared_sets[name]
    scores = ScoreSet.open(s.scores)
    params = {
        c: ClassParams(
            median_filter_frames=[1, 5, 9][i % 3],
            threshold=0.3 + 0.05 * i,
            threshold_off=(0.2 if i % 4 == 0 else None),
            fill_gap_s=0.1 * (i % 2),
            min_duration_s=0.05 * (i % 3),
        )
        for i, c in enumerate(scores.classes)
    }
    pfile = tmp_path / "params.json"
    ParamFile(scores.frame_hop_s, params).save(str(pfile))
    out = tmp_path / "events.tsv"
    assert main(["apply", "--scores", s.scores, "--params", str(pfile), "--durations", s.durations,
                 "--out", str(out)]) == 0
    assert main(["evaluate", "--scores", s.scores, "--ground-truth", s.ground_truth, "--durations",
                 s.durations, "--params", str(pfile), "--json"]) == 0
    reported = json.loads(capsys.readouterr().out.split("\n", 1)[1])["macro_f_measure"]

    truth = read_ground_truth(s.ground_truth)
    index = truth.index()
    per: dict[str, tuple[list[int], list[float], list[float]]] = {c: ([], [], []) for c in scores.classes}
    with open(out, encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            c = per[row["event_label"]]
            c[0].append(index[row["filename"]])
            c[1].append(float(row["onset"]))
            c[2].append(float(row["offset"]))
    events = {c: ClassEvents.from_lists(*v) for c, v in per.items()}
    _, oracle_f = sed_eval_event_counts(truth.filenames, scores.classes, truth.events, events, 0.2, 0.2)
    assert oracle_f["__macro__"] == reported
