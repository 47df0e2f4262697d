"""A job's tuning / held-out split depends on its clips' names and seed, not on file row order.

The runner used to split clip indices in ground-truth row order: reordering the rows of the
ground-truth file (same clips, same events) moved clips between the tuning and held-out parts
and changed every figure of the job.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.split import split_clips, split_names
from service.tuning.runner import run_job
from service.tuning.spec import parse_spec


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(st.text(min_size=1, max_size=6), min_size=2, max_size=40, unique=True),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**31 - 1),
    shuffle_seed=st.integers(0, 1000),
)
def test_split_names_ignores_the_order_of_the_names(names: list[str], fraction: float, seed: int,
                                                    shuffle_seed: int) -> None:
    shuffled = list(names)
    random.Random(shuffle_seed).shuffle(shuffled)
    tune_a, held_a = split_names(names, fraction, seed)
    tune_b, held_b = split_names(shuffled, fraction, seed)
    # The same clips on each side, in the same (name) order.
    assert [names[i] for i in tune_a] == [shuffled[i] for i in tune_b]
    assert [names[i] for i in held_a] == [shuffled[i] for i in held_b]
    # split_clips over the names in sorted order; the two parts cover every clip once.
    ordered = sorted(names)
    tune_s, held_s = split_clips(len(ordered), fraction, seed)
    assert [names[i] for i in tune_a] == [ordered[i] for i in tune_s]
    assert [names[i] for i in held_a] == [ordered[i] for i in held_s]
    assert sorted(np.r_[tune_a, held_a].tolist()) == list(range(len(names)))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from envs.synth import generate
    from envs.synth_config import SynthConfig

    res = generate(str(tmp_path_factory.mktemp("split") / "data"), SynthConfig(n_clips=40, n_classes=3))
    return {"scores": res.scores_uri, "ground_truth": res.ground_truth_path, "durations": res.durations_path}


def _job(data: dict[str, str], out: Path) -> Any:
    raw: dict[str, Any] = {
        "name": "split-order",
        "data": data,
        "space": {
            "kernels": [1, 5],
            "boxes": {"step_filter_s": [0.32, 0.48], "merge": [{"abs": 0.2}, {"rel": 2.0}]},
        },
        "strategies": [{"name": "manual"}, {"name": "exact", "budget": 20}],
        "heldout": {"fraction": 0.5, "seed": 3, "splits": 2},
        "folds": 3,
        "bootstrap": 100,
        "tracking": {"enabled": False},
        "output": str(out),
    }
    return run_job(parse_spec(raw), use_ray=False)


def test_a_job_gives_the_same_figures_whatever_the_ground_truth_row_order(data: dict[str, str],
                                                                          tmp_path: Path) -> None:
    lines = Path(data["ground_truth"]).read_text().splitlines()
    body = lines[1:]
    random.Random(7).shuffle(body)
    shuffled = tmp_path / "ground_truth_shuffled.tsv"
    shuffled.write_text("\n".join([lines[0], *body]) + "\n")
    first = _job(data, tmp_path / "a")
    second = _job({**data, "ground_truth": str(shuffled)}, tmp_path / "b")
    rows_a = [(r.strategy, r.selection, r.tuning_f_mean, r.heldout_f_mean) for r in first.rows]
    rows_b = [(r.strategy, r.selection, r.tuning_f_mean, r.heldout_f_mean) for r in second.rows]
    assert rows_a == rows_b
