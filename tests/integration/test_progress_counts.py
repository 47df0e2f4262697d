"""exact's progress on Ray (sweeps finishing in any order) ends at the comparison's evaluations."""

from __future__ import annotations

import pytest

from tests.unit.test_exact_progress import data, progress_of_exact  # noqa: F401  (a fixture)

pytestmark = pytest.mark.ray


@pytest.mark.usefixtures("local_ray")
def test_progress_on_ray_stays_within_the_budget_and_ends_at_the_comparisons_count(data, tmp_path) -> None:  # noqa: F811
    total, values, evaluations, compared, settings = progress_of_exact(data, 7.0, tmp_path, use_ray=True)
    assert total == 7.0 and settings == 5
    assert len(values) <= 3 * settings  # one report per wait (several sweeps may end at once)
    assert values == sorted(values) and max(values) <= 7.0
    assert values[-1] == evaluations == compared == 5
