"""The store: the one data-access layer."""
