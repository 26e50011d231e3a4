"""/healthz's verdict without sockets (masterchief.http.health)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from masterchief.config.secrets import REDACTOR
from masterchief.http.health import ComponentHealth, probe_store, summarize

OK = ComponentHealth()

CASES: list[tuple[str, dict[str, ComponentHealth], int, str, list[str]]] = [
    # name, components, HTTP status, overall status, components named unhealthy
    ("all ok", {"irc": OK, "store": OK, "web": OK, "sources": OK}, 200, "ok", []),
    ("irc down", {"irc": ComponentHealth.down("connection refused"), "store": OK}, 503,
     "unhealthy", ["irc"]),
    ("a source failing is not an outage", {"irc": OK, "sources": ComponentHealth.degraded("x")},
     200, "degraded", ["sources"]),
    ("down is listed before degraded", {"sources": ComponentHealth.degraded("rest a failing"),
     "store": ComponentHealth.down("no answer within 2s")}, 503, "unhealthy",
     ["store", "sources"]),
    ("two down", {"irc": ComponentHealth.down("a"), "web": ComponentHealth.down("b")}, 503,
     "unhealthy", ["irc", "web"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "components", "code", "status", "unhealthy"), CASES)
def test_summarize(
    name: str, components: dict[str, ComponentHealth], code: int, status: str, unhealthy: list[str]
) -> None:
    got_code, body = summarize(components)
    assert (got_code, body["status"]) == (code, status)
    assert body.get("unhealthy", []) == unhealthy
    assert set(body["components"]) == set(components)
    for comp in unhealthy:
        assert f"{comp} {components[comp].state}: {components[comp].reason}" in body["reason"]
        assert body["components"][comp]["reason"] == components[comp].reason
    for comp, health in components.items():
        assert body["components"][comp]["status"] == health.state
        if health.state == "ok":
            assert "reason" not in body["components"][comp]


def test_reasons_are_one_line_and_never_carry_a_secret() -> None:
    REDACTOR.register("health-secret-4711")
    hostile = "ERROR :Closing link\r\nhealth-secret-4711\n" + "x" * 1000
    _, body = summarize({"irc": ComponentHealth.down(hostile)})
    reason = body["components"]["irc"]["reason"]
    assert "\n" not in reason and "\r" not in reason
    assert "health-secret-4711" not in reason and "health-secret-4711" not in body["reason"]
    assert len(reason) <= 300


async def test_probe_store() -> None:
    async def fine() -> int:
        return 0

    async def broken() -> Any:
        raise OSError("/secret/path/mc.db: disk I/O error")

    async def stuck() -> Any:
        await asyncio.Event().wait()

    assert await probe_store(fine) == OK
    failed = await probe_store(broken)
    assert failed.state == "down" and failed.reason == "read failed (OSError)"
    slow = await probe_store(stuck, timeout=0.05)
    assert slow.state == "down" and slow.reason == "no answer within 0.05s"
