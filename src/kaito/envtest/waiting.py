"""Waiting on a condition against a live cluster, the way Gomega's ``Eventually`` does.

Tests on a shared machine must wait for what they expect, never sleep a fixed time and then
count; every suite needs the same poll-until-true loop with a failure that says what it waited
for and what it last saw, so it lives here next to the control plane it is used with.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T] | T],
    what: str,
    *,
    timeout: float = 120.0,  # noqa: ASYNC109
    interval: float = 0.2,
) -> T:
    """Poll ``check`` (plain or async) until it returns something truthy and return that value;
    after ``timeout`` seconds raise AssertionError naming ``what`` and the last value seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: Any = None
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        last = result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)


def eventually_blocking(
    check: Callable[[], T],
    what: str,
    *,
    timeout: float = 120.0,
    interval: float = 0.3,
) -> T:
    """:func:`eventually` for synchronous code (tests that drive ``kubectl`` and subprocesses):
    poll ``check`` until it returns something truthy and return that value; after ``timeout``
    seconds raise AssertionError naming ``what`` and the last value seen."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {result!r}")
        time.sleep(interval)
