"""Every strategy's budget rule: owned by its options model, applied before any Ray work.

The rules live in ``service/strategies/options.py``. ``check_job`` (the CLI and the job
process) and the service's ``check_options`` apply them with the field path
``strategies[i].budget``; a strategy's ``run`` applies them too, before it imports Ray.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import yaml

from envs.errors import SedtuneInputError
from envs.space import SearchSpace
from service.cli import main
from service.strategies.base import RunContext, Strategy
from service.strategies.options import (
    BayesOptions,
    ExactOptions,
    ManualOptions,
    RandomOptions,
    RLOptions,
    StrategyOptions,
)
from service.tuning.spec import parse_spec

# The default space of a job spec: its number of settings is exact's minimum budget.
N_SETTINGS = len(parse_spec({"name": "n", "data": {"scores": "s", "ground_truth": "g"},
                             "strategies": [{"name": "manual"}]}).space.to_space().settings)


# ---------------------------------------------------------------------- the rules themselves


def test_manual_takes_any_budget() -> None:
    assert ManualOptions().budget_error(0.001, N_SETTINGS) is None
    assert ManualOptions().budget_error(None, N_SETTINGS) is None


def test_exact_needs_one_threshold_per_setting() -> None:
    rule = ExactOptions()
    assert rule.budget_error(None, 48) is None
    assert rule.budget_error(48.0, 48) is None
    error = rule.budget_error(47.5, 48)
    assert error is not None and ">= 48" in error and "47.5" in error


@pytest.mark.parametrize("options", [RandomOptions(), BayesOptions()], ids=["random", "bayes"])
def test_tune_searches_need_one_trial(options: StrategyOptions) -> None:
    assert options.budget_error(None, N_SETTINGS) is None
    assert options.budget_error(1.0, N_SETTINGS) is None
    error = options.budget_error(0.5, N_SETTINGS)
    assert error is not None and ">= 1" in error and "0.5" in error


def test_rl_needs_the_untrained_policy_read_outs() -> None:
    assert RLOptions().budget_error(2.0, N_SETTINGS) is None
    assert RLOptions().budget_error(None, N_SETTINGS) is None  # default_budget 100
    error = RLOptions().budget_error(1.5, N_SETTINGS)
    assert error is not None and "budget must be >= 2" in error and "1.5" in error
    # No budget: the options' default budget is what must fit.
    error = RLOptions(default_budget=1.0).budget_error(None, N_SETTINGS)
    assert error is not None and "options.default_budget" in error
    # Read-outs not counted: any budget.
    assert RLOptions(count_readouts=False).budget_error(0.5, N_SETTINGS) is None


# ---------------------------------------------------------------------- applied before Ray


def _tune(tmp_path, strategies, capsys, monkeypatch) -> tuple[int, str]:
    import service.tuning.runner as runner
    from envs.synth import generate
    from envs.synth_config import SynthConfig

    def no_ray(*a, **k):  # any attempt to start Ray fails the test
        raise AssertionError("Ray was started for an invalid spec")

    monkeypatch.setattr(runner, "init_ray", no_ray)
    data = generate(str(tmp_path / "d"), SynthConfig(n_clips=12, n_classes=2, seed=0))
    spec = {
        "name": "t",
        "data": {"scores": data.scores_uri, "ground_truth": data.ground_truth_path,
                 "durations": data.durations_path},
        "strategies": strategies,
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    code = main(["tune", str(path), "--no-tracking"])
    return code, capsys.readouterr().err.strip()


BAD_BUDGETS = [
    ({"name": "exact", "budget": N_SETTINGS - 1}, f"budget must be >= {N_SETTINGS}"),
    ({"name": "random", "budget": 0.5}, "budget must be >= 1"),
    ({"name": "bayes", "budget": 0.9}, "budget must be >= 1"),
    ({"name": "rl", "budget": 1.0}, "budget must be >= 2"),
    ({"name": "rl", "options": {"default_budget": 1.0}}, "options.default_budget"),
]


@pytest.mark.parametrize(("entry", "rule"), BAD_BUDGETS, ids=[e["name"] for e, _ in BAD_BUDGETS])
def test_tune_refuses_a_budget_before_ray(tmp_path, capsys, monkeypatch, entry, rule) -> None:
    code, err = _tune(tmp_path, [{"name": "manual"}, entry], capsys, monkeypatch)
    assert code == 2, err
    assert err.startswith("sedtune: error:") and "\n" not in err
    assert "strategies[1].budget: " in err and rule in err, err


@pytest.mark.parametrize(("entry", "rule"), BAD_BUDGETS, ids=[e["name"] for e, _ in BAD_BUDGETS])
def test_the_service_refuses_a_budget_at_submission(tmp_path, entry, rule) -> None:
    from tests.unit.api_support import AUTH, make_api

    (tmp_path / "data" / "set").mkdir(parents=True)
    api = make_api(tmp_path)
    r = api.client.post("/v1/jobs", json=api.spec(strategies=[{"name": "manual"}, entry]), headers=AUTH)
    assert r.status_code == 422, r.text
    assert [d["field"] for d in r.json()["detail"]] == ["strategies[1].budget"]
    assert rule in r.json()["message"]
    assert not api.store.list_jobs() and not api.submitter.submitted


def _strategy(name: str) -> type[Strategy]:
    from service.strategies.base import strategy_class

    return strategy_class(name)


@pytest.mark.parametrize(("entry", "rule"), BAD_BUDGETS[:4], ids=[e["name"] for e, _ in BAD_BUDGETS[:4]])
def test_run_refuses_a_budget_before_importing_ray(tmp_path, monkeypatch, entry, rule) -> None:
    cls = _strategy(entry["name"])  # imported first: the strategy modules import no Ray
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    problem = SimpleNamespace(space=parse_spec({
        "name": "n", "data": {"scores": "s", "ground_truth": "g"}, "strategies": [{"name": "manual"}],
    }).space.to_space())
    assert len(problem.space.settings) == N_SETTINGS
    with pytest.raises(SedtuneInputError, match=rf"^{entry['name']}: budget: .*{rule}"):
        cls().run(problem, entry["budget"], 0, RunContext(str(tmp_path), use_ray=False))  # type: ignore[arg-type]


def test_the_exact_rule_follows_the_space() -> None:
    small = SearchSpace(kernels=(1, 3), decoders=("frames",))
    assert len(small.settings) == 2
    assert ExactOptions().budget_error(2.0, len(small.settings)) is None
    assert ExactOptions().budget_error(1.0, len(small.settings)) is not None
