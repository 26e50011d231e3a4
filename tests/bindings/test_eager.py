"""first_step: a coroutine runs up to its first wait at once, the rest later."""

from __future__ import annotations

import asyncio

import pytest

from masterchief.bindings.eager import first_step


async def test_a_coroutine_that_never_waits_finishes_in_the_call() -> None:
    seen: list[str] = []

    async def quick() -> int:
        seen.append("ran")
        return 42

    assert first_step(quick()) == (True, 42)
    assert seen == ["ran"]


async def test_one_that_waits_ran_its_first_step_and_goes_on_when_awaited() -> None:
    seen: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    async def slow() -> str:
        seen.append("before")
        value = await gate
        seen.append("after")
        return f"got {value}"

    done, rest = first_step(slow())
    assert done is False and seen == ["before"]
    task = asyncio.create_task(rest)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert seen == ["before"]
    gate.set_result("x")
    assert await asyncio.wait_for(task, 5) == "got x"
    assert seen == ["before", "after"]


async def test_cancellation_reaches_the_coroutine() -> None:
    cleaned: list[bool] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            cleaned.append(True)

    done, rest = first_step(waits())
    assert not done
    task = asyncio.create_task(rest)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]


async def test_errors_propagate_from_the_first_step_and_from_later() -> None:
    async def fails_at_once() -> None:
        raise ValueError("now")

    with pytest.raises(ValueError, match="now"):
        first_step(fails_at_once())

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise KeyError("later")

    done, rest = first_step(fails_later())
    assert not done
    with pytest.raises(KeyError, match="later"):
        await asyncio.wait_for(rest, 5)
