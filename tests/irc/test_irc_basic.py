"""The bot against a real InspIRCd: the README's first promise."""

import shutil
from pathlib import Path

from tests.harness import running_bot

ROOT = Path(__file__).resolve().parents[2]


async def test_ping_in_channel_and_private(tmp_path: Path, ircd, irc_client) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "ping.py", tmp_path / "scripts" / "ping.py")
    async with running_bot(tmp_path, ircd.host, ircd.port) as app:
        me = app.irc.nickname
        c = await irc_client()
        await c.join("#ops")
        await c.say("#ops", "!ping hello")
        line = await c.wait_for(rf"^:{me}!\S+ PRIVMSG #ops :pong hello$")
        assert line.text == "pong hello"
        await c.say(me, "ping private")
        await c.wait_for(rf"^:{me}!\S+ PRIVMSG {c.nick} :pong private$")
