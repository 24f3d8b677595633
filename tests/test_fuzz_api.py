"""Schemathesis against the app's own OpenAPI document: every operation, no 5xx, every answer as documented.

The app runs in process (schemathesis drives it over ASGI, lifespan included) on a database, a Temporal
dev server and a worker of its own, so generated filings really start case workflows. Every request carries
an admin's access token, so the fuzz reaches past the access rules. Each operation is fuzzed with data that
fits its schema (positive) and data that does not (negative).
FUZZ_EXAMPLES sets the examples per operation and mode (30 by default; the slow run uses 300).
"""

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import FlakyStrategyDefinition, Unsatisfiable
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.specs.openapi.checks import positive_data_acceptance
from schemathesis.specs.openapi.schemas import OpenApiSchema

from api.main import create_app
from core.config import Settings
from core.security import issue_access_token
from core.users import find_login
from tests.fault_support import IsolatedDesk, isolated_desk
from tests.helpers import TEST_ADMIN_EMAIL, bearer, ensure_test_admin

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))

# Operations not fuzzed, each with its reason and the tests that cover it instead.
NOT_FUZZED = {
    # Endless Server-Sent Event streams: an in-process client waits for a body that never ends.
    ("GET", "/api/v1/events"): "tests/test_event_stream.py",
    ("GET", "/api/v1/track/{token}/events"): "tests/test_event_stream.py",
    # A generated URL would make the service look up and send to arbitrary hosts: tests never leave this machine.
    ("POST", "/api/v1/webhooks"): "tests/test_webhook_api.py",
    ("PATCH", "/api/v1/webhooks/{webhook_id}"): "tests/test_webhook_api.py",
}

# Every operation the app declares, read from the document itself (building the app touches nothing),
# with the modes that can generate for it: there is no wrong input for an operation that takes none.
OPERATIONS = [
    pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in create_app(Settings()).openapi()["paths"].items()
    for method, spec in item.items()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if (mode == GenerationMode.POSITIVE or spec.get("parameters") or spec.get("requestBody"))
    and (method.upper(), path) not in NOT_FUZZED
]


@pytest.fixture(scope="module")
def fuzz_desk(mysql_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IsolatedDesk]:
    with isolated_desk(mysql_url, "fuzz", tmp_path_factory.mktemp("fuzz")) as desk:
        yield desk


@pytest.fixture(scope="module")
def api_schema(fuzz_desk: IsolatedDesk) -> OpenApiSchema:
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(fuzz_desk.settings))
    # Requests carry a real credential (see `admin`); the access rules have tests of their own.
    schema.config.generation.update(with_security_parameters=False)
    return schema


@pytest.fixture(scope="module")
def admin(fuzz_desk: IsolatedDesk) -> dict[str, str]:
    """An admin's credential header (the token is made directly: sign-in has tests of its own)."""
    ensure_test_admin(fuzz_desk.session_factory)
    with fuzz_desk.session_factory() as session:
        user = find_login(session=session, email=TEST_ADMIN_EMAIL)
        assert user is not None
    token = issue_access_token(
        secret_key=fuzz_desk.settings.SECRET_KEY,
        user_id=user.id,
        role=user.role,
        version=user.token_version,
        minutes=120,
    )
    return bearer(token)


def schema_valid_input_passes_field_validation(ctx: CheckContext, response: Response, case: Case[Any]) -> None:
    """Input that fits the schema may be refused for what it means (an unknown team is a 422 naming it, an
    unknown id a 404, a refused transition a 409), never for its shape: a 422 listing field errors would
    mean the document promises more than the API accepts. Replaces schemathesis's `positive_data_acceptance`,
    which counts every 422 as a rejection of valid data."""
    if case.meta is not None and case.meta.generation.mode.is_positive and response.status_code == 422:
        body = response.json()
        assert not body.get("errors"), f"schema-valid input failed field validation: {body}"


# Creating operations whose generated input is mostly accepted: the fuzz must reach their happy path.
GENERATION_ATTEMPTS = 3
MUST_CREATE = {("POST", "/api/v1/teams"), ("POST", "/api/v1/agents"), ("POST", "/api/v1/cases")}


def fuzz(
    schema: OpenApiSchema, method: str, path: str, mode: GenerationMode, examples: int, headers: dict[str, str]
) -> Counter[int]:
    """Run the operation on `examples` generated inputs, sending `headers`; the status codes it answered."""
    operation = schema[path][method]
    statuses: Counter[int] = Counter()

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: Case[Any]) -> None:
        response = case.call_and_validate(
            headers=headers,
            additional_checks=[schema_valid_input_passes_field_validation],
            excluded_checks=[positive_data_acceptance],
        )
        statuses[response.status_code] += 1

    try:
        for attempt in range(1, GENERATION_ATTEMPTS + 1):
            try:
                run()
                break
            except FlakyStrategyDefinition:
                # schemathesis's negative-mode generators filter against state they mutate themselves, so
                # Hypothesis may see a choice sequence draw differently on replay. That says nothing about the
                # app (its failures are check failures, raised at once): generate afresh.
                if attempt == GENERATION_ATTEMPTS:
                    raise
    except Unsatisfiable:
        if mode == GenerationMode.POSITIVE:
            raise
        pytest.skip("no input violates this operation's schema (its only parameters are free-form path strings)")
    assert statuses, "nothing was sent"
    assert all(code < 500 for code in statuses), statuses
    if mode == GenerationMode.POSITIVE and (method, path) in MUST_CREATE:
        assert any(200 <= code < 300 for code in statuses), f"never accepted any generated input: {statuses}"
    return statuses


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_operation_answers_as_documented(
    api_schema: OpenApiSchema, admin: dict[str, str], method: str, path: str, mode: GenerationMode
) -> None:
    fuzz(api_schema, method, path, mode, EXAMPLES, admin)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_operation_answers_as_documented_long(
    api_schema: OpenApiSchema, admin: dict[str, str], method: str, path: str, mode: GenerationMode
) -> None:
    fuzz(api_schema, method, path, mode, 10 * EXAMPLES, admin)
