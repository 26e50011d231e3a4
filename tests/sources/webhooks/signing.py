"""Signed delivery headers for tests: GitHub, Standard Webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid


def github_headers(secret: str, body: bytes, event: str = "push") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256="
        + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }


def standard_webhooks_headers(
    secret: str | bytes,
    body: bytes,
    *,
    msg_id: str | None = None,
    ts: float | None = None,
) -> dict[str, str]:
    """Standard Webhooks headers: ``secret`` is the key's bytes, or a string
    (``whsec_<base64>`` is decoded; any other string's UTF-8 bytes are the key,
    as a generic hook takes it)."""
    if isinstance(secret, str):
        key = (
            base64.b64decode(secret.removeprefix("whsec_"))
            if secret.startswith("whsec_")
            else secret.encode()
        )
    else:
        key = secret
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    stamp = str(int(time.time() if ts is None else ts))
    mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(mac).decode(),
    }
