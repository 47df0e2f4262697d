"""Property-based run of schemathesis against the published OpenAPI document: no 5xx, responses
conform to the schema (fake cluster, in-process ASGI calls, bounded examples per operation).

Schemathesis's own pytest plugin does not support this pytest version, so the test drives its
Hypothesis strategies (``APIOperation.as_strategy``) directly, in positive (schema-valid) and
negative (schema-violating) modes.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.unit.api_support import (
    AUTH,
    Api,
    api_fixture,  # noqa: F401  (the `api` fixture)
)

MAX_EXAMPLES = 25


@pytest.fixture
def api_schema(api: Api):
    # a job and a schedule exist, so that some generated requests hit real records
    assert api.client.post("/v1/jobs", json=api.spec(), headers=AUTH).status_code == 201
    r = api.client.post("/v1/schedules", json={"name": "prop", "cron": "0 3 * * *", "spec": api.spec()},
                        headers=AUTH)
    assert r.status_code == 201
    return schemathesis.openapi.from_asgi("/openapi.json", api.client.app, headers=AUTH)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_has_no_5xx_and_conforms(api_schema, mode) -> None:
    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 14
    checks = [not_a_server_error, status_code_conformance, content_type_conformance]
    if mode == GenerationMode.POSITIVE:
        checks.append(response_schema_conformance)
    tried = []
    for op in operations:

        @given(case=op.as_strategy(generation_mode=mode, headers=AUTH))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            response = case.call(headers=AUTH)
            assert response.status_code < 500, (case.method, case.formatted_path, response.text)
            case.validate_response(response, checks=checks)

        try:
            run()
        except Unsatisfiable:
            # nothing schema-violating can be sent to an operation without parameters or body
            assert mode == GenerationMode.NEGATIVE and not _has_inputs(op), op.label
            continue
        tried.append(op.label)
    assert len(tried) >= (14 if mode == GenerationMode.POSITIVE else 10), tried


def _has_inputs(op) -> bool:
    return bool(op.path_parameters or op.query or op.body)
