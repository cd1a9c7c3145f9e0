"""Property-based requests to every operation of the published OpenAPI schema (schemathesis), with
and without a token, against the whole service on a real chain: no answer is a 5xx, every status
is one the operation documents, and every answer matches its documented media type and schema.

Bounded (EXAMPLES per operation and caller) so that it runs in about a minute on two cores."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode, checks
from schemathesis.core.result import Ok

from tests.support.service import OPERATOR_TOKEN, RunningService, anvil_service

EXAMPLES = 8
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]
# Judges each item on its own and answers 200 with a problem in a malformed item's place (the
# schema documents items as they must be, not what the envelope accepts).
PER_ITEM = {"submitTradeBatch", "cancelTradeBatch", "registerParticipantBatch"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with anvil_service(tmp_path_factory.mktemp("api-fuzz")) as running:
        yield running


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
@pytest.mark.parametrize("token", ["operator", "none", "forged"])
def test_every_operation_answers_as_documented(api: RunningService, token: str, mode: GenerationMode) -> None:
    """With the local operator token (every scope), without a token, and with the random bearer
    values schemathesis makes up for operations that declare the bearer scheme."""
    base_url = str(api.public.base_url).rstrip("/")
    schema = schemathesis.openapi.from_url(base_url + "/openapi.json")
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"} if token == "operator" else {}
    failures: set[str] = set()
    statuses: Counter[int] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            if token == "none" and case.headers:
                case.headers.pop("Authorization", None)
            response = case.call(base_url=base_url, headers=headers, timeout=60)
            statuses[response.status_code // 100] += 1
            try:
                per_item = case.operation.definition.raw.get("operationId") in PER_ITEM
                case.validate_response(
                    response,
                    checks=[c for c in CHECKS if not (per_item and c is checks.negative_data_rejection)],
                    headers=headers,
                )
            except (Exception, BaseExceptionGroup) as failure:
                failures.add(f"{case.method} {case.path}: {failure}"[:1500])
                raise

        with contextlib.suppress(Exception, BaseExceptionGroup):  # recorded above; every operation is tried
            check()
    assert operations >= 50 and statuses[5] == 0
    if token == "operator" and mode is GenerationMode.POSITIVE:
        assert statuses[2] >= operations // 2, statuses  # valid requests too, not refusals only
    assert api.public.get("/health").json()["status"] == "ok"
    assert not failures, "\n\n".join(sorted(failures))
