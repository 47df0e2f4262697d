"""Strategy options are typed in the job spec: validated without Ray or torch, documented in the API."""

from __future__ import annotations

import subprocess
import sys
from typing import get_args

from service.strategies.base import REGISTRY, strategy_class
from service.strategies.options import OPTIONS
from service.tuning.spec import StrategySpec


def test_parsing_every_strategy_imports_no_ray_or_torch() -> None:
    code = """
import sys
from service.tuning.spec import parse_spec
spec = parse_spec({
    "name": "all", "data": {"scores": "s", "ground_truth": "g"},
    "strategies": [{"name": "manual"}, {"name": "exact", "budget": 100},
                   {"name": "random", "options": {"max_concurrent_trials": 2}},
                   {"name": "bayes", "options": {"warm_start": {"Dog": {"threshold": 0.4}}}},
                   {"name": "rl", "options": {"hidden": [32, 32]}}],
})
assert [type(s.options).__name__ for s in spec.strategies] == [
    "ManualOptions", "ExactOptions", "RandomOptions", "BayesOptions", "RLOptions"]
print(sorted(m for m in ("ray", "torch", "optuna", "mlflow") if m in sys.modules))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_the_spec_union_and_the_registry_name_the_same_strategies_and_options() -> None:
    members = get_args(get_args(StrategySpec)[0])
    names = [get_args(m.model_fields["name"].annotation)[0] for m in members]
    assert names == list(OPTIONS) == list(REGISTRY)
    for name, member in zip(names, members, strict=True):
        cls = strategy_class(name)
        assert cls.name == name
        assert member.model_fields["options"].annotation is cls.Options, name


def test_openapi_documents_every_option(tmp_path) -> None:
    from tests.unit.api_support import AUTH, make_api

    doc = make_api(tmp_path).client.get("/openapi.json", headers=AUTH).json()
    schemas = doc["components"]["schemas"]
    items = schemas["JobSpec"]["properties"]["strategies"]["items"]
    assert items["discriminator"]["propertyName"] == "name"
    assert set(items["discriminator"]["mapping"]) == set(REGISTRY)
    for name, ref in items["discriminator"]["mapping"].items():
        entry = schemas[ref.rsplit("/", 1)[-1]]
        assert entry["properties"]["name"]["const"] == name
        assert "description" in entry["properties"]["budget"]
        options = schemas[entry["properties"]["options"]["$ref"].rsplit("/", 1)[-1]]
        assert options.get("additionalProperties") is False, name
        for field, prop in options.get("properties", {}).items():
            assert prop.get("description"), f"{name}: option {field} has no description"
    rl = schemas["RLOptions"]["properties"]
    assert "seconds" in rl["sample_timeout_s"]["description"]
    assert "full-set evaluations" in rl["default_budget"]["description"]
