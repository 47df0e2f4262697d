"""exact's live progress counts full-set evaluations, as its result and the comparison do.

It used to count (class, setting) tasks: 3 classes x 11 settings showed "33" against a budget
of 11 evaluations while the comparison said 11. The bar (or status file) must never pass the
budget and must end exactly at the comparison's evaluations.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.tuning.runner import run_job
from service.tuning.spec import parse_spec

# Both decoders: 3 frames settings (kernels) and 2 boxes settings (step filters).
SPACE = {"kernels": [1, 5, 9], "boxes": {"step_filter_s": [0.32, 0.64], "merge": [{"abs": 0.2}]}}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from envs.synth import generate
    from envs.synth_config import SynthConfig

    res = generate(str(tmp_path_factory.mktemp("progress") / "data"), SynthConfig(n_clips=24, n_classes=3))
    return {"scores": res.scores_uri, "ground_truth": res.ground_truth_path, "durations": res.durations_path}


def progress_of_exact(data: dict[str, str], budget: float | None, tmp_path: Any, use_ray: bool = False
                      ) -> tuple[float | None, list[float], float, float, int]:
    """(total given to the bar, values reported, result's evaluations, comparison's, settings)."""
    raw: dict[str, Any] = {
        "name": "progress",
        "data": data,
        "space": SPACE,
        "strategies": [{"name": "manual"}, {"name": "exact", "budget": budget}],
        "folds": 2,
        "bootstrap": 100,
        "output": str(tmp_path / "out"),
    }
    spec = parse_spec(raw)
    bars: dict[str, tuple[float | None, list[float]]] = {}

    def factory(label: str, total: float | None) -> Any:
        bars[label] = (total, [])
        return bars[label][1].append

    result = run_job(spec, use_ray=use_ray, progress=factory)
    total, values = bars["exact (split 1/1)"]
    row = next(r for r in result.rows if r.strategy == "exact")
    settings = len(spec.space.to_space().settings)
    return total, values, result.results["exact"][0].evaluations, row.evaluations, settings


@pytest.mark.parametrize("extra", [0.0, 2.5])
def test_progress_stays_within_the_budget_and_ends_at_the_comparisons_count(data, tmp_path, extra) -> None:
    settings = len(parse_spec({"name": "n", "data": data, "strategies": [{"name": "manual"}], "space": SPACE}
                              ).space.to_space().settings)
    budget = settings + extra  # one threshold per setting: 3 classes x settings tasks > budget
    total, values, evaluations, compared, _ = progress_of_exact(data, budget, tmp_path)
    assert total == budget
    assert len(values) == 3 * settings  # one report per (class, setting) sweep
    assert values == sorted(values) and max(values) <= budget
    assert values[-1] == evaluations == compared == settings


def test_without_a_budget_progress_ends_at_the_evaluations_spent(data, tmp_path) -> None:
    total, values, evaluations, compared, settings = progress_of_exact(data, None, tmp_path)
    assert total is None
    assert values == sorted(values) and values[-1] == evaluations == compared
    assert evaluations > settings  # every decision of every setting


def test_ray_batches_keep_class_order_and_balance_the_cpus() -> None:
    from dataclasses import dataclass

    from service.strategies.exact import batches

    @dataclass
    class T:
        label: str
        setting: int

    tasks = [T(c, s) for c in "abc" for s in range(11)]
    # 33 tasks on 2 CPUs: 33 // 16 = 2 per Ray task, never across classes
    assert [len(g) for g in batches(tasks, 2)] == [2, 2, 2, 2, 2, 1] * 3
    assert all(len({t.label for t in g}) == 1 for g in batches(tasks, 2))
    big = [T(f"c{i}", s) for i in range(400) for s in range(11)]
    groups = batches(big, 2)
    assert len(groups) == 400 and all(len(g) == 11 for g in groups)  # a class per Ray task
    assert [t for g in groups for t in g] == big
    assert [len(g) for g in batches(tasks, 64)] == [1] * 33
