"""GET /metrics: queue depths and counters in Prometheus text format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import running_bot


async def test_metrics_expose_queues_and_counters(tmp_path: Path, ircd: Any) -> None:
    over = {
        "web": {"host": "127.0.0.1", "port": 0},
        "webhooks": {"github": {"secret": "s3cret-value", "channels": ["#ops"]}},
    }
    async with running_bot(tmp_path, ircd.host, ircd.port, **over) as app:
        assert app.web is not None
        base = f"http://127.0.0.1:{app.web.port}"
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/webhooks/github", data=b"{}") as resp:
                assert resp.status == 401
            async with session.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
    assert "s3cret-value" not in text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("masterchief_dispatch_queue_depth", ())] == 0
    assert ("masterchief_output_queue_depth", (("queue", "server"),)) in samples
    assert samples[("masterchief_irc_connected", ())] == 1
    assert samples[("masterchief_bindings", ())] > 0
    assert ("masterchief_handler_lane", (("what", "threads"),)) in samples
    key = (
        "masterchief_webhook_deliveries_total",
        (("outcome", "unauthorized"), ("provider", "github")),
    )
    assert samples[key] == 1
    assert samples[("masterchief_dispatch_events_total", (("outcome", "received"),))] >= 1
