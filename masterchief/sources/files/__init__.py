"""Watched folders: files dropped into a folder become ``file`` Events, once."""
