"""Tailed logs: one ``log`` Event per line."""
