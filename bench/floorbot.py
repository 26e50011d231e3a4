"""The floor for ``bench/rtt.py``: a minimal asyncio bot that answers ``!ping``.

    .venv/bin/python bench/floorbot.py HOST PORT NICK CHANNEL

No IRC library, no queue, no pacing, no task per line: asyncio streams on a
plain socket, one read loop that parses each line (tags, prefix, command,
params, as any bot must) and answers ``!ping X`` in the channel with
``PRIVMSG CHANNEL :pong X`` at once.  Like MasterChief it sets
``TCP_NODELAY`` and re-arms ``TCP_QUICKACK`` after every read, so both pay
the same network costs.  It asks for no capabilities (MasterChief negotiates
echo-message and reads its own replies back: that is part of its cost).

It exits when the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys

_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def parse(line: str) -> tuple[str, str, list[str]]:
    """``[@tags] [:prefix] COMMAND params... [:trailing]`` -> (prefix, command, params)."""
    if line.startswith("@"):
        _, _, line = line.partition(" ")
    prefix = ""
    if line.startswith(":"):
        prefix, _, line = line[1:].partition(" ")
    line, _, trailing = line.partition(" :")
    words = line.split()
    params = words[1:]
    if trailing or line != line.rstrip():
        params.append(trailing)
    return prefix, words[0].upper() if words else "", params


async def main(host: str, port: int, nick: str, channel: str) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(f"NICK {nick}\r\nUSER {nick} 0 * :floor bot\r\n".encode())
    while data := await reader.readline():
        if _QUICKACK is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
        _, command, params = parse(data.decode("utf-8", "replace").rstrip("\r\n"))
        if command == "PRIVMSG" and len(params) == 2 and params[1].startswith("!ping"):
            writer.write(f"PRIVMSG {params[0]} :pong{params[1][5:]}\r\n".encode())
        elif command == "PING":
            writer.write(f"PONG :{params[-1] if params else ''}\r\n".encode())
        elif command == "001":
            writer.write(f"JOIN {channel}\r\n".encode())


if __name__ == "__main__":
    h, p, n, c = sys.argv[1:5]
    with contextlib.suppress(KeyboardInterrupt, ConnectionError):
        asyncio.run(main(h, int(p), n, c))
