"""Built-in commands (``!help``, ``!deploy`` ...), ordinary bindings owned by ``builtin:*``."""
