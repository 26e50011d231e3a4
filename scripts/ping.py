"""!ping: the smallest useful binding."""

from masterchief import Event, bind


@bind("pub", "-|-", "!ping")
async def ping(ev: Event) -> None:
    """answer pong (with whatever followed !ping)"""
    await ev.reply(f"pong {ev.text}".rstrip())


@bind("msg", "-|-", "ping")
def ping_private(ev: Event) -> None:
    """the same in a private message (a plain def works too)"""
    ev.reply(f"pong {ev.text}".rstrip())
