"""The event log: what the dispatcher processed, stored for audit and replay."""
