"""Webhook intake: verified, durable, deduplicated deliveries become ``webhook`` Events."""
