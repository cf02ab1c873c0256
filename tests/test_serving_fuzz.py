"""The API fuzzed from its own OpenAPI spec (schemathesis): no input gives a 5xx."""

from __future__ import annotations

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from metarec.serving import ServeSettings, create_app
from test_serving import _checkpoint, _hybrid_checkpoint


def test_no_input_gives_a_server_error(tmp_path):
    models = (_hybrid_checkpoint(tmp_path / "v1"), _checkpoint(tmp_path / "v2", 1))
    app = create_app(ServeSettings(models=models, db=str(tmp_path / "events.db")))
    with TestClient(app):  # runs the lifespan: models and store loaded for the fuzz run
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 10
        calls = []
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=40,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            )
            def fuzz(case):
                response = case.call_and_validate(checks=[not_a_server_error])
                calls.append(response.status_code)

            fuzz()
        assert len(calls) >= 10 * len(operations) // 2
        assert all(code < 500 for code in calls)
        assert 200 in calls and 422 in calls  # it reached the handlers and the validation
