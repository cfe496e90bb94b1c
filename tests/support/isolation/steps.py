"""What one operation of the machine is: a request, its check against the model, and maybe a twin.

A `Step` is planned from the model before it is sent, so steps of different tenants can be sent
concurrently and still be checked exactly: each tenant's step reads and changes only that
tenant's part of the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID, uuid4

from hypothesis import strategies as st

from tests.support.isolation.model import Actor, World, new_marker
from tests.support.isolation.scan import Answer, Kind, Request

T = TypeVar("T")


class Violation(AssertionError):
    """An isolation or model check that failed; `category` names which (see machine.CHECKS)."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(f"[{category}] {message}")
        self.category = category


class Picker:
    """Choices drawn from Hypothesis, so that a failing run can be replayed and shrunk."""

    def __init__(self, data: st.DataObject) -> None:
        self.data = data

    def choice(self, options: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(options))

    def turn(self, options: Sequence[T], turn: int) -> T:
        """An option drawn, shifted by `turn`: the simplest run (every draw 0) goes round all options."""
        return options[(self.data.draw(st.integers(0, len(options) - 1)) + turn) % len(options)]

    def chance(self, percent: int) -> bool:
        return self.data.draw(st.integers(0, 99)) < percent

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def subset(self, options: Sequence[T], most: int) -> list[T]:
        return self.data.draw(st.lists(st.sampled_from(options), max_size=most, unique=True)) if options else []


@dataclass
class Step:
    op: str
    actor: Actor
    request: Request
    # Compares the answer with the model and updates the model; True when the caller's tenant's
    # rows should have changed (every other tenant's must not have).
    expect: Callable[[Answer], bool]
    # A probe: the same request with never-existing values in place of another tenant's; the two
    # answers must read the same once those values are masked.
    twin: Request | None = None
    foreign: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()


Planner = Callable[[World, Actor, Picker], Step]


@dataclass(frozen=True)
class Op:
    name: str
    family: str  # personas, memory, campaigns, tasks
    kind: Kind
    target: str  # the tool name, resource template or prompt name it drives
    plan: Planner
    probe: bool = False  # sends another tenant's identifiers


def tool(tool_name: str, /, **args: Any) -> Request:
    return Request("tool", tool_name, {k: v for k, v in args.items() if v is not None})


def resource(template: str, value: str) -> Request:
    return Request("resource", template, {"uri": template.split("{")[0] + value})


def prompt(prompt_name: str, /, **args: str | None) -> Request:
    return Request("prompt", prompt_name, {k: v for k, v in args.items() if v is not None})


def data_of(step_op: str, answer: Answer) -> Any:
    """The answer's data, failing the step when it is an error."""
    if answer.error:
        raise Violation("answer", f"{step_op}: the model expects success, got: {answer.text[:500]}")
    return answer.data


def refused(step_op: str, answer: Answer, *fragments: str) -> bool:
    """The answer must be an error mentioning each fragment; nothing changes."""
    if not answer.error:
        raise Violation("answer", f"{step_op}: the model expects a refusal ({fragments}), got: {answer.text[:500]}")
    missing = [f for f in fragments if f not in answer.text]
    if missing:
        raise Violation("answer", f"{step_op}: refusal without {missing}: {answer.text[:500]}")
    return False


def same(step_op: str, what: str, got: Any, expected: Any) -> None:
    if got != expected:
        raise Violation("answer", f"{step_op}: {what} is {got!r}, the model expects {expected!r}")


def check_view(op: str, what: str, found: dict[str, Any], view: dict[str, Any]) -> None:
    same(op, what, {k: found.get(k) for k in view}, view)


def fresh_id() -> str:
    return str(uuid4())


def unknown_slug(slug: str, marker: str) -> str:
    """A slug of the same shape that names no persona anywhere."""
    return slug.replace(marker, new_marker())


def uuid_or_none(value: Any) -> UUID | None:
    return None if value is None else UUID(str(value))
