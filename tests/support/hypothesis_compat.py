"""hypothesis-jsonschema 0.23.1 (its latest release) on a current hypothesis.

It draws an object's keys with hypothesis's private `many` helper through `while elements.more():`;
hypothesis has since turned `many` into a context manager iterated with `for _ in elements:`,
so every object schema fails with "'many' object has no attribute 'more'". `install()` gives
hypothesis-jsonschema the old interface on top of the new one; it does nothing on a hypothesis
that still has `more()`.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import hypothesis_jsonschema._from_schema as from_schema_module
from hypothesis.internal.conjecture import utils as conjecture_utils


class _Many:
    """`many(...)` with `more()` and `reject()`, driving the iterating `many` underneath."""

    def __init__(self, data: Any, *, min_size: int, max_size: float, average_size: float) -> None:
        self._inner: Any = conjecture_utils.many(data, min_size=min_size, max_size=max_size, average_size=average_size)
        self._inner.__enter__()
        self._steps = iter(self._inner)

    def more(self) -> bool:
        if next(self._steps, False) is None:  # the iterator yields None per element
            return True
        self._inner.__exit__(None, None, None)
        return False

    def reject(self, why: str | None = None) -> None:
        self._inner.reject(why)


def install() -> None:
    if not hasattr(conjecture_utils.many, "more"):
        from_schema_module.cu = SimpleNamespace(many=_Many)  # pyright: ignore[reportPrivateImportUsage]
