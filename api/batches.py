"""Batches answered item by item: each item is validated on its own, so that a malformed one is
refused in its place instead of failing the whole batch; the service answers the others, and the
two are merged back in the batch's order. The envelopes themselves stay in the schema modules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from api.problems import Problem, problem_for, validation_problem
from ledger import errors

Body = TypeVar("Body")
Request = TypeVar("Request")
Answer = TypeVar("Answer")


def parse_items(
    items: Sequence[Any], adapter: TypeAdapter[Body], to_domain: Callable[[Body], Request], member: str, path: str
) -> list[Request | dict[str, Any]]:
    """Each item as a request for the service, or the validation problem naming its bad values
    (`trades[3].trade.nonce` for `member` "trades")."""
    parsed: list[Request | dict[str, Any]] = []
    for index, raw in enumerate(items):
        try:
            parsed.append(to_domain(adapter.validate_python(raw)))
        except PydanticValidationError as exc:
            parsed.append(validation_problem(exc.errors(), prefix=(member, index), instance=path))
    return parsed


def merge_answers(
    parsed: Sequence[object], outcomes: Sequence[Answer | errors.LedgerError], path: str
) -> list[tuple[int, Answer | Problem]]:
    """Merges the items refused by validation (the problems in `parsed`) with the service's
    answers for the others (`outcomes`, in the order of those items in `parsed`): each item's
    index with its answer, or with its problem."""
    answers = iter(outcomes)
    merged: list[tuple[int, Answer | Problem]] = []
    for index, item in enumerate(parsed):
        if isinstance(item, dict):
            merged.append((index, Problem.model_validate(item)))
            continue
        answer = next(answers)
        if isinstance(answer, errors.LedgerError):
            merged.append((index, Problem.model_validate(problem_for(answer, path))))
        else:
            merged.append((index, answer))
    return merged


class _ItemOut(Protocol):
    @property
    def outcome(self) -> str: ...


def counts(results: Sequence[_ItemOut]) -> dict[str, int]:
    """The envelope's `accepted` and `refused`."""
    accepted = sum(result.outcome == "accepted" for result in results)
    return {"accepted": accepted, "refused": len(results) - accepted}
