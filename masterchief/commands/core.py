"""Built-in commands, as ordinary bindings owned by ``builtin:core``.

They are listed by ``binds`` like any other binding, and a user script that
binds the same command shadows them (pub/msg are not stackable).  Each
command has a channel form (``pub``, ``!cmd``) and a private form (``msg``,
``cmd``).  Replies that can be long (``binds``,
``help``) go to the asker privately.

Who may change whose flags (``chattr``) follows Eggdrop's ``.chattr``
(src/cmds.c); the binding's ``m|m`` only lets masters in, and
``chattr_refusal`` decides the rest, before anything is written:

* global flags need global +m; global +n, +m and +t only a global owner (+n)
  may give or take;
* flags on a channel need global +m or +m on THAT channel (the one named,
  else the one the command was typed in) -- +m on another channel is not
  enough; +n there needs a global owner, +m there a global owner or an
  owner of that channel;
* nobody changes +b (bot records) with chattr;
* the flags of a user who holds +n (globally, or on the channel in
  question) only a global owner may change (stricter than Eggdrop, which
  relies on masters not being able to touch n/m/t).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..bindings.event import ConsoleSession, Event, LinkedBot
from ..bindings.flags import FLAG_LETTERS, FlagError, apply_changes, implied
from ..bindings.masks import irc_lower
from ..bindings.registry import BIND_TYPES, Binding
from ..config.secrets import REDACTOR
from ..errors import UserError
from ..identity.users import check_channel, check_hostmask_strength
from ..irc.pacer import PRIORITIES
from ..sources.logs.tail import LogTailer
from ..sources.status import format_sources
from .host import CoreHost
from .paging import PAGE_LINES, private_page, split_page, wrap_words

__all__ = ["CTCP_OWNER", "OWNER", "bindings", "chattr_refusal", "ctcp_bindings", "guarded"]

OWNER = "builtin:core"
CTCP_OWNER = "builtin:irc"
VERSION = "MasterChief 0.1"
_HELP_LINE_CHARS = 350  # command names per !help line: one IRC line's worth


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    flags: str
    usage: str
    help: str
    handler: Callable[[CoreHost, Event], Any]


def _fmt_age(seconds: float) -> str:
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


# -- the commands ---------------------------------------------------------------


def cmd_help(app: CoreHost, ev: Event) -> None:
    who = app.resolve(ev)
    glob = who.global_flags() if who else ""
    chan = who.channel_flags(ev.channel) if who and ev.channel else ""
    btype = "pub" if ev.channel else "msg"
    prefix = app.command_prefix if ev.channel else ""
    args, page = split_page(ev.args, 0)
    wanted = args[0].lstrip(app.command_prefix).lower() if args else None
    usable: list[Binding] = []
    seen: set[str] = set()
    for b in app.table.binds(btype):
        name = b.mask.lower()
        if name in seen:
            continue
        seen.add(name)
        if b.flags.allows(glob, chan) or (b.flags.anyone and who is None):
            usable.append(b)
    if wanted is not None:
        for b in usable:
            if b.mask.lstrip(app.command_prefix).lower() == wanted:
                ev.private(_describe(app, b, prefix))
                return
        ev.private(f"no command {wanted!r} that you may use; try {prefix}help")
        return
    names = sorted(b.mask for b in usable)
    lines = wrap_words(names, _HELP_LINE_CHARS, first="commands you may use: ")
    private_page(
        ev, app.command_prefix, [*lines, f"{prefix}help <command> for details"], page, "help"
    )


def _describe(app: CoreHost, b: Binding, prefix: str) -> str:
    cmd = BUILTIN_HELP.get(b.mask.lstrip(app.command_prefix).lower())
    if cmd is not None and b.owner == OWNER:
        return f"{prefix}{cmd.name} {cmd.usage}".rstrip() + f" — {cmd.help} (flags {cmd.flags})"
    doc = (getattr(b.handler, "__doc__", None) or "").strip().splitlines()
    text = doc[0] if doc else "no description"
    return f"{b.mask} — {text} (flags {b.flags.text})"


def _seen_as(ev: Event) -> tuple[str, str]:
    """How ``!whoami`` names the asker, and how they were seen."""
    peer = ev.peer
    if isinstance(peer, ConsoleSession):
        return peer.handle, f"{peer.transport} session {peer.session}"
    if isinstance(peer, LinkedBot):
        return peer.user or peer.bot, f"through the linked bot {peer.bot}"
    return str(ev.nick), f"account {ev.account or 'none'}"


def cmd_whoami(app: CoreHost, ev: Event) -> None:
    who = app.resolve(ev)
    name, seen = _seen_as(ev)
    if who is None:
        where = f"{ev.hostmask}, {seen}" if ev.peer is None else seen
        ev.reply(f"{name}: no user record matches you ({where})")
        return
    glob = who.global_flags()
    text = f"{name}: you are {who.handle} ({seen}), "
    text += f"global flags +{glob}" if glob else "no global flags"
    if ev.channel:
        chan = who.channel_flags(ev.channel)
        text += f", on {ev.channel} +{chan}" if chan else f", no flags on {ev.channel}"
    if who.restricted is not None:
        text += f"; you matched {who.restricted}: flags above +v and approvals do not count"
    ev.reply(text)


def cmd_binds(app: CoreHost, ev: Event) -> None:
    args, page = split_page(ev.args, 1)
    if len(args) == 1 and args[0].isdecimal():  # "!binds 2": a page of all types
        args, page = [], max(1, int(args[0][:6]))
    btype = args[0] if args else None
    if btype is not None and btype not in BIND_TYPES:
        # Quoted, like every echo of typed text: no raw colours or CTCP.
        ev.private(f"no bind type {btype[:40]!r}; types: {', '.join(BIND_TYPES)}")
        return
    rows = app.table.binds(btype)
    lines = [f"{len(rows)} bindings{f' of type {btype}' if btype else ''}:"]
    for b in rows:
        lines.append(f"{b.type:<6} {b.flags.text:<5} {b.mask:<24} {b.hits:>6} {b.handler_name}")
    private_page(ev, app.command_prefix, lines, page, f"binds {btype}" if btype else "binds")


def cmd_rehash(app: CoreHost, ev: Event) -> None:
    report = app.rehash()
    ok = sum(1 for r in report.scripts if r.ok)
    bad = [r for r in report.scripts if not r.ok]
    ev.reply(f"rehash: {ok} scripts loaded, {len(bad)} failed, {len(app.table)} bindings")
    for r in bad:
        ev.reply(f"rehash: {r}")
    # Paths, keys and reasons go to the asker only, one problem a line (a few at most).
    if report.config_error:
        problems = report.config_error.splitlines()
        ev.reply(
            f"rehash: the configuration is invalid ({_problems(len(problems))}, sent to you "
            "privately); still running the previous one"
        )
        _tell_few(ev, "rehash: ", problems, "the log")
    if report.restart_needed:
        ev.reply(f"rehash: changed {', '.join(report.restart_needed)}: needs a restart")
    if report.module_errors:
        n = len(report.module_errors)
        kept = (
            f"; the old version stays for {', '.join(report.modules_kept)}"
            if report.modules_kept
            else ""
        )
        ev.reply(
            f"rehash: {n} module{'s' if n != 1 else ''} not loaded ({_problems(n)} sent to you "
            f"privately){kept}"
        )
        lines = [line for err in report.module_errors for line in err.splitlines()]
        _tell_few(ev, "rehash: module ", lines, "masterchief module validate")
    if report.module_config_errors:
        names = sorted(report.module_config_errors)
        ev.reply(
            f"rehash: the module config of {', '.join(names)} is invalid (sent to you "
            "privately); a deploy of it would fail"
        )
        errors = [report.module_config_errors[n] for n in names]
        lines = [line for err in errors for line in err.splitlines()]
        _tell_few(ev, "rehash: ", lines, "masterchief module validate")
    if report.modules_changed:
        ev.reply(f"rehash: modules reloaded: {', '.join(report.modules_changed[:10])}")
    if report.sources_changed:
        ev.reply(f"rehash: sources {', '.join(report.sources_changed[:10])}")


def _problems(n: int) -> str:
    return f"{n} problem{'s' if n != 1 else ''}"


def _tell_few(ev: Event, prefix: str, lines: Sequence[str], rest: str) -> None:
    """Tell the first few of *lines* privately; *rest* says where the others are."""
    for line in lines[:PAGE_LINES]:
        ev.private(prefix + line)
    if len(lines) > PAGE_LINES:
        ev.private(f"{prefix}... and {len(lines) - PAGE_LINES} more (see {rest})")


def cmd_status(app: CoreHost, ev: Event) -> None:
    d = app.dispatcher
    out = app.irc.output.depths() if app.irc else {}
    server = f"{app.irc.settings.host}:{app.irc.settings.port}" if app.irc else "-"
    state = "connected" if app.irc and app.irc.connected.is_set() else "disconnected"
    depths = " ".join(f"{q} {out.get(q, 0)}" for q in PRIORITIES)
    failures = d.stats.errors + d.stats.timeouts
    ev.reply(
        f"up {_fmt_age(time.monotonic() - app.started)}, {state} to {server}; "
        f"queues: dispatch {d.queue.qsize()} (inflight {d.inflight}), output {depths}; "
        f"binds {len(app.table)}, users {len(app.users.all())}, "
        f"events {d.stats.processed}, refused {d.stats.refused}, errors {failures}"
    )


async def cmd_adduser(app: CoreHost, ev: Event) -> None:
    if len(ev.args) != 2:
        ev.reply("usage: adduser HANDLE NICK")
        return
    handle, nick = ev.args
    seen = app.irc.lookup_nick(nick) if app.irc else None
    if seen is None:
        ev.reply(f"I don't see {nick[:40]!r} on any of my channels")
        return
    account, user, host = seen
    if account and app.irc is not None and app.irc.accounts_available:
        rec = await app.users.add_user(handle, account=account)
        ev.reply(f"added {rec.handle} identified by account {account}")
        return
    # ident and host as the server shows them: never a weak mask.
    mask = check_hostmask_strength(f"*!{user}@{host}")
    rec = await app.users.add_user(handle, hostmasks=(mask,))
    note = ""
    if not app.config.users.hostmask_flags_on_account_networks and (
        app.irc is not None and app.irc.accounts_available
    ):
        note = f" ({nick} is not logged in: until the record has an account, "
        note += "it carries no flags above +v here)"
    ev.reply(f"added {rec.handle} with hostmask {mask}{note}")


# Eggdrop (src/cmds.c, cmd_chattr): no-one changes +b with chattr; global n, m
# and t are a global owner's to give.
_NOBODY = frozenset("b")
_OWNER_ONLY_GLOBAL = frozenset("nmt")


def _letters(changes: str) -> frozenset[str]:
    """The flags a change string (``+o-v``) touches; ``FlagError`` if invalid."""
    apply_changes("", changes)  # validates
    return frozenset(c for c in changes if c in FLAG_LETTERS)


def _plus(letters: frozenset[str]) -> str:
    return "+" + "".join(sorted(letters))


def chattr_refusal(
    *,
    asker_global: str,
    asker_chan: str,
    target: str,
    target_global: str,
    target_chan: str,
    global_changes: frozenset[str],
    chan_changes: frozenset[str],
    channel: str | None,
) -> str | None:
    """Why the asker may not make these flag changes, or None if he may.

    ``asker_chan``/``target_chan`` are the flags held on ``channel`` (the
    channel whose flags change), not on the channel the command came from.
    The rules are in the module docstring.
    """
    g, c = implied(asker_global), implied(asker_chan)
    owner = "n" in g
    bot = (global_changes | chan_changes) & _NOBODY
    if bot:
        return f"{_plus(bot)} marks bot records; chattr does not change it"
    if not owner and (
        "n" in implied(target_global) or (chan_changes and "n" in implied(target_chan))
    ):
        return f"only a global owner (+n) may change the flags of {target}, who has +n"
    if global_changes:
        if "m" not in g:
            return "you need global +m to change global flags (on a channel: FLAGS #channel)"
        if not owner and global_changes & _OWNER_ONLY_GLOBAL:
            denied = _plus(global_changes & _OWNER_ONLY_GLOBAL)
            return f"only a global owner (+n) may give or take global {denied}"
    if chan_changes:
        where = channel or "the channel"
        if "m" not in g and "m" not in c:
            return f"you need global +m or +m on {where} to change flags on {where}"
        if not owner and "n" in chan_changes:
            return f"only a global owner (+n) may give or take +n on {where}"
        if not owner and "n" not in c and "m" in chan_changes:
            return f"only a global owner or an owner of {where} may give or take +m there"
    return None


def _parse_chattr(ev: Event) -> tuple[str, str, str, str | None] | str:
    """(handle, global changes, channel changes, channel), or a usage error.

    ``FLAGS [#chan]`` changes global flags, or with a channel that channel's;
    Eggdrop's ``GLOBAL|CHANNEL`` form changes both, on the channel named or
    else the one the command was typed in.
    """
    if len(ev.args) not in (2, 3):
        return "usage: chattr HANDLE FLAGS [#channel]"
    handle, changes = ev.args[0], ev.args[1]
    chan = ev.args[2] if len(ev.args) == 3 else None
    glob, bar, on_chan = changes.partition("|")
    if bar:
        chan = chan or ev.channel
        if chan is None:
            return "usage: chattr HANDLE GLOBAL|CHANNEL #channel"
        return handle, glob, on_chan, chan
    if chan is not None:
        return handle, "", changes, chan
    return handle, changes, "", None


async def cmd_chattr(app: CoreHost, ev: Event) -> None:
    parsed = _parse_chattr(ev)
    if isinstance(parsed, str):
        ev.reply(parsed)
        return
    handle, glob, on_chan, chan = parsed
    # Before any reply names it: refusals below echo the channel.
    chan = check_channel(chan) if chan is not None else None
    rec = app.users.get(handle)
    if rec is None:
        ev.reply(f"no such user {handle[:40]!r}")
        return
    try:
        global_changes, chan_changes = _letters(glob), _letters(on_chan)
    except FlagError as exc:
        ev.reply(str(exc))
        return
    who = app.resolve(ev)
    refusal = chattr_refusal(
        asker_global=who.global_flags() if who else "",
        asker_chan=who.channel_flags(chan) if who and chan else "",
        target=rec.handle,
        target_global=rec.flags,
        target_chan=rec.chan_flags(chan, app.casemapping) if chan else "",
        global_changes=global_changes,
        chan_changes=chan_changes,
        channel=chan,
    )
    if refusal is not None:
        ev.private(refusal)  # privately, and nothing changed
        return
    # The channel first: a bad channel name fails before anything is written.
    if chan is not None and on_chan:
        rec = await app.users.chattr(handle, on_chan, channel=chan, casemapping=app.casemapping)
    if glob:
        rec = await app.users.chattr(handle, glob, casemapping=app.casemapping)
    text = f"{rec.handle}: global +{rec.flags or '-'}" if glob else ""
    if chan is not None:
        flags = rec.chan_flags(chan, app.casemapping) or "-"
        text = (text + ", " if text else f"{rec.handle} ") + f"on {chan}: +{flags}"
        if not _on_channel(app, chan):
            text += f" (note: I am not on {chan})"  # applied anyway, as in Eggdrop
    ev.reply(text)


def _on_channel(app: CoreHost, chan: str) -> bool:
    """Whether ``chan`` is one the bot is configured for or has joined.

    Compared under the server's casemapping, so ``#OPS`` is ``#ops``.
    """
    if app.irc is None:
        return False
    mapping = app.casemapping
    known = [name for name, _ in app.irc.settings.channels] + app.irc.channels
    target = irc_lower(chan, mapping)
    return any(irc_lower(name, mapping) == target for name in known)


async def cmd_files(app: CoreHost, ev: Event) -> None:
    from ..sources.status import folder_rows, format_status, log_rows

    _, page = split_page(ev.args, 0)
    live = [
        st for s in app.sources.sources if isinstance(s, LogTailer) for st in s.follower_status()
    ]
    folders = await folder_rows(app.config, app.store)
    logs = await log_rows(app.store, live)
    private_page(ev, app.command_prefix, format_status(folders, logs), page, "files")


def cmd_sources(app: CoreHost, ev: Event) -> None:
    _, page = split_page(ev.args, 0)
    lines = format_sources(app.sources.statuses(), time.time())
    private_page(ev, app.command_prefix, lines, page, "sources")


BUILTINS: tuple[Command, ...] = (
    Command("help", "-|-", "[command|page]", "list the commands you may use", cmd_help),
    Command("whoami", "-|-", "", "show which user record you match", cmd_whoami),
    # Eggdrop's .binds, .rehash and .adduser need global +m: +m on one channel
    # must not reload the bot or add users; chattr checks the rest itself.
    Command("binds", "m", "[type] [page]", "list bindings with hit counts", cmd_binds),
    Command("rehash", "m", "", "reload config, modules and scripts", cmd_rehash),
    Command("status", "-|-", "", "uptime, queue depths, binds, users", cmd_status),
    Command("adduser", "m", "HANDLE NICK", "add a user by their account or hostmask", cmd_adduser),
    Command("chattr", "m|m", "HANDLE FLAGS [#chan]", "change a user's flags", cmd_chattr),
    Command("sources", "o|o", "[page]", "every input source: state, events, errors", cmd_sources),
    Command("files", "o|o", "[page]", "watched folders and tailed logs", cmd_files),
)
BUILTIN_HELP = {c.name: c for c in BUILTINS}


def guarded(
    fn: Callable[[Event], Any], name: str, doc: str, to: Callable[[Event], str] | None = None
) -> Callable[[Event], Any]:
    """``fn`` as a binding handler (``binds`` shows ``name``, ``help`` the
    first line of ``doc``): a ``UserError`` it raises is its reply, redacted
    and begun with ``to(ev)``.  A plain ``fn`` stays plain, so a built-in
    runs on the loop, not in a task."""

    def refuse(ev: Event, exc: UserError) -> None:
        ev.reply((to(ev) if to else "") + REDACTOR.redact(str(exc)))

    run: Callable[[Event], Any]
    if inspect.iscoroutinefunction(fn):

        async def run_async(ev: Event) -> Any:
            try:
                return await fn(ev)
            except UserError as exc:
                refuse(ev, exc)
                return None

        run = run_async
    else:

        def run_plain(ev: Event) -> Any:
            try:
                return fn(ev)
            except UserError as exc:
                refuse(ev, exc)
                return None

        run = run_plain
    run.__module__ = fn.__module__  # binds names the command's own module
    run.__qualname__ = name
    run.__doc__ = doc
    return run


def _bound(app: CoreHost, cmd: Command) -> Callable[[Event], Any]:
    fn = cmd.handler
    if inspect.iscoroutinefunction(fn):

        async def call_async(ev: Event) -> Any:
            return await fn(app, ev)

        return guarded(call_async, fn.__name__, cmd.help)
    return guarded(lambda ev: fn(app, ev), fn.__name__, cmd.help)


def ctcp_bindings(app: CoreHost) -> None:
    """The only CTCP answers the bot gives (pydle's own are switched off), by
    NOTICE and within the bot-wide budget (bot.flood.ctcp_replies); owner
    ``builtin:irc``."""

    def reply(ev: Event, text: str) -> None:
        if ev.nick and app.irc is not None:
            app.irc.ctcp_reply(ev.nick, ev.key, text)

    def version(ev: Event) -> None:
        reply(ev, VERSION)

    def ping(ev: Event) -> None:
        reply(ev, ev.text[:64])

    def clock(ev: Event) -> None:
        reply(ev, time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime()))

    def clientinfo(ev: Event) -> None:
        reply(ev, "CLIENTINFO PING TIME VERSION")

    for word, fn in (("VERSION", version), ("PING", ping), ("TIME", clock)):
        app.table.bind("ctcp", "-|-", word, fn, owner=CTCP_OWNER)
    app.table.bind("ctcp", "-|-", "CLIENTINFO", clientinfo, owner=CTCP_OWNER)


def bindings(app: CoreHost) -> None:
    """Bind the built-in commands (owner ``builtin:core``); the runtime
    collects them and swaps them in at once (``BindingTable.install``)."""
    prefix = app.command_prefix
    for cmd in BUILTINS:
        handler = _bound(app, cmd)
        app.table.bind("pub", cmd.flags, prefix + cmd.name, handler, owner=OWNER)
        app.table.bind("msg", cmd.flags, cmd.name, handler, owner=OWNER)
