"""Tests for masterchief.irc.pacer: splitting, sanitising, priorities, pacing, run()."""

from __future__ import annotations

import asyncio
import math
import unicodedata

import pytest

from masterchief.irc.pacer import OutputQueue, sanitize, split_message

WORST_PREFIX = 30 + 1 + 10 + 1 + 63  # nick!user@host before set_self()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wire(prefix_len: int, command: str, target: str, chunk: str) -> bytes:
    """The line as a recipient gets it, with a prefix of prefix_len bytes."""
    prefix = "n" * prefix_len
    return f":{prefix} {command} {target} :{chunk}\r\n".encode()


def drain(q: OutputQueue) -> list[str]:
    """Pop everything that is allowed right now."""
    lines = []
    while (line := q.pop()) is not None:
        lines.append(line)
    return lines


def drain_all(q: OutputQueue, clock: FakeClock) -> list[str]:
    """Pop everything, advancing the fake clock exactly as run() would sleep."""
    lines = []
    while (delay := q.next_delay()) is not None:
        clock.advance(delay)
        line = q.pop()
        assert line is not None
        lines.append(line)
    return lines


# -- sanitize / split_message ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", "plain text"),
        ("a\r\nb", "a b"),
        ("a\rb", "a b"),
        ("a\nb", "a b"),
        ("a\0b", "ab"),
        ("x\r\nQUIT :bye", "x QUIT :bye"),
        ("\r\n\0", " "),
        ("é日本🎉", "é日本🎉"),
    ],
)
def test_sanitize(text: str, expected: str) -> None:
    assert sanitize(text) == expected


@pytest.mark.parametrize(
    ("max_bytes", "text", "expected"),
    [
        (512, "hello", ["hello"]),
        (512, "", []),
        # line breaks never start a line: each CR, LF or CRLF is one space
        (512, "a\nb", ["a b"]),
        (512, "a\r\n\r\nb\n", ["a  b "]),
        (512, "x\r\nQUIT :bye", ["x QUIT :bye"]),
        (512, "a\rb", ["a b"]),
        (512, "a\0b", ["ab"]),
        (512, "\0", []),
        (512, "\r\n \n", []),  # blank after sanitising: nothing to say
        (36, "aaaa\nbbbb\ncccc", ["aaaa bbbb", "cccc"]),  # only length splits
        # budget = max_bytes - (prefix 10 + "PRIVMSG" 7 + "#c" 2 + framing 7) = max_bytes - 26
        (36, "0123456789", ["0123456789"]),  # exactly the budget
        (36, "0123456789X", ["0123456789", "X"]),  # one byte over
        (36, "aaaa bbbb cccc", ["aaaa bbbb", "cccc"]),  # split at the last space that fits
        (36, "aaaaaaaaaa bb", ["aaaaaaaaaa", "bb"]),  # the space right after a full chunk
        (36, "aaaa  bbbbbbbb", ["aaaa ", "bbbbbbbb"]),  # only one space is consumed
        (36, "abcdefghijklmnop", ["abcdefghij", "klmnop"]),  # no space: hard cut
        (36, "éééééé", ["ééééé", "é"]),  # 2-byte chars, 10-byte budget
        (35, "éééééé", ["éééé", "éé"]),  # 9 bytes: never half a character
        (36, "日本日本", ["日本日", "本"]),  # 3-byte chars
        (36, "🎉🎉🎉", ["🎉🎉", "🎉"]),  # 4-byte chars
        (36, "e\u0301e\u0301e\u0301e\u0301", ["e\u0301e\u0301e\u0301", "e\u0301"]),
        # a combining mark stays with its letter: cut before the 'e', not after it
        (36, "abcdefghe\u0301", ["abcdefgh", "e\u0301"]),
        # the family emoji (man ZWJ woman ZWJ girl, 18 bytes) is not cut at a joiner
        (45, "ab\U0001f468\u200d\U0001f469\u200d\U0001f467", ["ab", "👨‍👩‍👧"]),
        # flags are pairs of regional indicators: never split a pair
        (36, "a🇫🇷🇩🇪", ["a🇫🇷", "🇩🇪"]),
        # a single cluster longer than a line is still cut (as late as fits)
        (30, "e\u0301\u0301\u0301", ["e\u0301", "\u0301\u0301"]),
    ],
)
def test_split_message(max_bytes: int, text: str, expected: list[str]) -> None:
    chunks = split_message(10, "PRIVMSG", "#c", text, max_bytes)
    assert chunks == expected
    for chunk in chunks:
        assert len(wire(10, "PRIVMSG", "#c", chunk)) <= max_bytes


def test_split_message_refuses_when_there_is_no_room_for_text() -> None:
    with pytest.raises(ValueError, match="no room for text"):
        split_message(400, "PRIVMSG", "#" + "x" * 100, "hi")


def _stripped(s: str) -> str:
    return s.replace(" ", "")


BIG_SPACED = " ".join(["é", "日本", "🎉", "naïve", "👨‍👩‍👧", "e\u0301", "🇫🇷"] * 60)
BIG_SOLID = "é日本🎉👨‍👩‍👧e\u0301🇫🇷x" * 50


@pytest.mark.parametrize("text", [BIG_SPACED, BIG_SOLID], ids=["spaced", "solid"])
@pytest.mark.parametrize("prefix_len", [WORST_PREFIX, 20])
@pytest.mark.parametrize("target", ["#ops", "#" + "c" * 49])
def test_split_long_multibyte(text: str, prefix_len: int, target: str) -> None:
    assert len(text.encode()) >= 2000
    chunks = split_message(prefix_len, "PRIVMSG", target, text)
    assert len(chunks) > 3
    for chunk in chunks:
        data = chunk.encode("utf-8")  # strict: a lone surrogate would raise
        assert data.decode("utf-8") == chunk
        assert len(wire(prefix_len, "PRIVMSG", target, chunk)) <= 512
        # no chunk starts inside a cluster
        assert unicodedata.category(chunk[0]) not in ("Mn", "Mc", "Me")
        assert chunk[0] != "\u200d"
        assert chunk[-1] != "\u200d"
    # Re-joined, nothing is lost but the spaces split on (one per boundary).
    assert _stripped("".join(chunks)) == _stripped(text)
    assert sum(map(len, chunks)) >= len(text) - (len(chunks) - 1)


def test_split_every_budget_keeps_utf8_and_limit() -> None:
    # Sweep the byte budget across every alignment of 1- to 4-byte characters.
    text = "aé日🎉 " * 40
    for max_bytes in range(30, 130):
        chunks = split_message(10, "PRIVMSG", "#c", text, max_bytes)
        for chunk in chunks:
            assert chunk
            assert len(wire(10, "PRIVMSG", "#c", chunk)) <= max_bytes
        assert _stripped("".join(chunks)) == _stripped(text)


# -- enqueueing: injection, targets, prefix ------------------------------------


def parse_command(line: str) -> str:
    return line.split(" ", 1)[0]


def test_crlf_injection_never_starts_a_command() -> None:
    q = OutputQueue()
    assert q.privmsg("#ops", "x\r\nQUIT :bye") == 1
    assert q.privmsg("#ops", "y\nPART #ops :bye") == 1
    assert q.notice("#ops", "y\rJOIN #evil\0") == 1
    assert q.privmsg("#ops", ["one", "two\r\nQUIT :bye"]) == 2  # a list item is one line too
    assert q.raw("PRIVMSG #ops :z\r\nQUIT :bye") is True
    lines = drain(q)
    assert lines == [
        "PRIVMSG #ops :x QUIT :bye",
        "PRIVMSG #ops :y PART #ops :bye",
        "NOTICE #ops :y JOIN #evil",
        "PRIVMSG #ops :one",
        "PRIVMSG #ops :two QUIT :bye",
        "PRIVMSG #ops :z QUIT :bye",
    ]
    stream = "".join(line + "\r\n" for line in lines)
    for wire_line in stream.split("\r\n")[:-1]:
        assert "\r" not in wire_line
        assert "\n" not in wire_line
        assert "\0" not in wire_line
        assert parse_command(wire_line) in ("PRIVMSG", "NOTICE")


def test_nul_is_removed() -> None:
    q = OutputQueue()
    q.privmsg("#ops", "a\0b")
    assert q.pop() == "PRIVMSG #ops :ab"


@pytest.mark.parametrize(
    "target", ["", " #ops", "#ops x", "#ops\r", "#ops\n", "#o\0ps", ":#ops", "#o\tps"]
)
def test_bad_target_is_refused(target: str) -> None:
    q = OutputQueue()
    with pytest.raises(ValueError, match="target"):
        q.privmsg(target, "hi")
    with pytest.raises(ValueError, match="target"):
        q.notice(target, "hi")
    assert q.depths() == {"mode": 0, "alert": 0, "server": 0, "help": 0}


@pytest.mark.parametrize("target", ["#ops", "alice", "#a,#b", "&local", "#日本"])
def test_good_target_is_accepted(target: str) -> None:
    q = OutputQueue()
    assert q.privmsg(target, "hi") == 1
    assert q.pop() == f"PRIVMSG {target} :hi"


def test_bad_priority_is_refused() -> None:
    q = OutputQueue()
    with pytest.raises(ValueError, match="priority"):
        q.privmsg("#ops", "hi", "urgent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="priority"):
        q.raw("PING x", "urgent")  # type: ignore[arg-type]


def test_prefix_counts_as_recipients_see_it() -> None:
    text = "word " * 400
    q = OutputQueue(burst=100)
    q.privmsg("#ops", text)
    worst = drain(q)
    prefix = "n" * 30 + "!" + "u" * 10 + "@" + "h" * 63
    for line in worst:
        assert len(f":{prefix} {line}\r\n".encode()) <= 512

    q.set_self("bot", "mc", "host.example")
    q.privmsg("#ops", text)
    known = drain(q)
    for line in known:
        assert len(f":bot!mc@host.example {line}\r\n".encode()) <= 512
    # With a shorter known prefix the lines use the room it leaves.
    assert len(known[0]) > len(worst[0])
    assert len(known) < len(worst)

    q.set_self("bot")  # user and host unknown again: worst case for those
    q.privmsg("#ops", text)
    for line in drain(q):
        assert len(f":bot!{'u' * 10}@{'h' * 63} {line}\r\n".encode()) <= 512


def test_raw() -> None:
    q = OutputQueue()
    assert q.raw("MODE #ops +o alice\r\n", "mode") is True
    assert q.raw("") is False
    assert q.raw("\r\n") is False
    assert q.raw("PRIVMSG #ops :" + "x" * 497) is False  # 511 + CRLF
    assert q.raw("PRIVMSG #ops :" + "x" * 496) is True  # exactly 512 with CRLF
    assert q.pop() == "MODE #ops +o alice"
    assert q.stats()["refused"] == 3


def test_empty_text_queues_nothing() -> None:
    q = OutputQueue()
    assert q.privmsg("#ops", "") == 0
    assert q.privmsg("#ops", "\n\r\n") == 0
    assert q.privmsg("#ops", ["", " ", "\r\n"]) == 0
    assert q.next_delay() is None


def test_a_list_sends_several_lines_each_split_by_length() -> None:
    q = OutputQueue(max_line_bytes=64)
    q.set_self("bot", "mc", "h")  # prefix 8 bytes: 64 - 8 - 7 - 4 - 7 = 38 bytes of text
    long = "word " * 12  # 60 bytes: two lines
    assert q.privmsg("#ops", ["first", "", long.strip(), "last"]) == 4
    lines = drain(q)
    assert lines[0] == "PRIVMSG #ops :first"
    assert [ln.removeprefix("PRIVMSG #ops :") for ln in lines[1:3]] == [
        "word word word word word word word",
        "word word word word word",
    ]
    assert lines[3] == "PRIVMSG #ops :last"


# -- priorities ----------------------------------------------------------------


def test_priority_order_and_fifo() -> None:
    q = OutputQueue(burst=50)
    q.privmsg("#h", "help 1", "help")
    q.privmsg("#s", "server 1")
    q.privmsg("#h", "help 2", "help")
    q.privmsg("#s", "server 2")
    q.raw("MODE #s +v a", "mode")
    q.raw("MODE #s +v b", "mode")
    assert q.depths() == {"mode": 2, "alert": 0, "server": 2, "help": 2}
    assert q.pop() == "MODE #s +v a"
    q.raw("MODE #s +v c", "mode")  # a late mode line still overtakes server/help
    assert drain(q) == [
        "MODE #s +v b",
        "MODE #s +v c",
        "PRIVMSG #s :server 1",
        "PRIVMSG #s :server 2",
        "PRIVMSG #h :help 1",
        "PRIVMSG #h :help 2",
    ]


def test_alerts_overtake_any_number_of_replies() -> None:
    # 50 replies queued, then an alert: it is the next line after the mode
    # lane, not the 51st (issue 8, item 4: the FIFO put alerts 93 s late).
    q = OutputQueue(burst=100)
    for i in range(50):
        q.privmsg("#ops", f"reply {i}")
    q.privmsg("#ops", "FIRING HighCPU", "alert")
    q.raw("JOIN #x", "mode")
    assert drain(q)[:3] == ["JOIN #x", "PRIVMSG #ops :FIRING HighCPU", "PRIVMSG #ops :reply 0"]


@pytest.mark.parametrize(
    ("alerts", "replies", "expected"),
    [
        # (alert lines, reply lines) queued -> lanes in the order sent
        (3, 0, "AAA"),
        (0, 3, "RRR"),
        (4, 2, "AAAARR"),
        (6, 2, "AAAARAAR"),
        (10, 3, "AAAARAAAARAAR"),
        (9, 0, "AAAAAAAAA"),  # no reply waiting: no share is taken
    ],
)
def test_replies_get_a_fair_share_of_an_alert_storm(
    alerts: int, replies: int, expected: str
) -> None:
    q = OutputQueue(burst=100)
    for i in range(alerts):
        q.privmsg("#ops", f"A{i}", "alert")
    for i in range(replies):
        q.privmsg("#ops", f"R{i}")
    got = "".join(line.split(":", 1)[1][0] for line in drain(q))
    assert got == expected


def test_the_share_counts_only_alerts_sent_while_replies_wait() -> None:
    q = OutputQueue(burst=100)
    for i in range(6):
        q.privmsg("#ops", f"A{i}", "alert")
    assert [q.pop() for _ in range(3)] == [f"PRIVMSG #ops :A{i}" for i in range(3)]
    q.privmsg("#ops", "R0")  # from now on replies wait: four alerts, then R0
    got = [line.split(":", 1)[1] for line in drain(q)]
    assert got == ["A3", "A4", "A5", "R0"]


@pytest.mark.parametrize(
    ("queued", "expected"),
    [
        # (target, text) queued in this order -> texts in the order sent
        ([("a", "a0"), ("a", "a1"), ("a", "a2"), ("b", "b0")], ["a0", "b0", "a1", "a2"]),
        (
            [("a", "a0"), ("a", "a1"), ("a", "a2"), ("b", "b0"), ("b", "b1"), ("c", "c0")],
            ["a0", "b0", "c0", "a1", "b1", "a2"],
        ),
        ([("#ops", f"x{i}") for i in range(4)], [f"x{i}" for i in range(4)]),  # one target: FIFO
    ],
)
def test_reply_targets_take_turns(queued: list[tuple[str, str]], expected: list[str]) -> None:
    q = OutputQueue(burst=100)
    for target, text in queued:
        q.privmsg(target, text)
    assert [line.split(" :", 1)[1] for line in drain(q)] == expected


def test_a_flooders_replies_do_not_hold_up_another_users() -> None:
    clock = FakeClock()
    q = OutputQueue(burst=1, rate=1.0, clock=clock)
    for i in range(20):
        q.privmsg("flooder", f"help {i}")
    assert q.pop() == "PRIVMSG flooder :help 0"
    q.privmsg("alice", "pong")  # arrives behind 19 lines to the flooder
    clock.advance(1.0)
    assert q.pop() == "PRIVMSG alice :pong"
    assert drain_all(q, clock) == [f"PRIVMSG flooder :help {i}" for i in range(1, 20)]


async def test_a_line_put_back_goes_first_whatever_its_turn() -> None:
    q = OutputQueue(burst=100)
    q.privmsg("a", "a0")
    q.privmsg("a", "a1")
    q.privmsg("b", "b0")
    sent: list[str] = []

    async def fail_once(line: str) -> None:
        if not sent:
            sent.append("failed " + line)
            raise ConnectionError("gone")
        sent.append(line)

    await q.run(fail_once)  # a0 fails: back to the head, run() returns
    task = asyncio.create_task(q.run(fail_once))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert sent == ["failed PRIVMSG a :a0", "PRIVMSG a :a0", "PRIVMSG b :b0", "PRIVMSG a :a1"]


def test_drain_time_of_a_lane_ignores_the_replies_below_it() -> None:
    clock = FakeClock()
    q = OutputQueue(burst=1, rate=1.0, clock=clock)
    assert q.pop() is None
    for i in range(60):
        q.privmsg("#ops", f"reply {i}")
    q.pop()  # the bucket is empty now
    assert q.drain_time() == pytest.approx(59.0)
    assert q.drain_time(priority="alert") == 0.0
    q.privmsg("#ops", "alert", "alert")
    # the alert, plus the one reply its fair share lets in
    assert q.drain_time(priority="alert") == pytest.approx(2.0)
    assert q.drain_time(3, priority="alert") == pytest.approx(5.0)
    assert q.drain_time(priority="mode") == 0.0
    with pytest.raises(ValueError, match="priority"):
        q.drain_time(priority="urgent")  # type: ignore[arg-type]


def test_charge_takes_tokens_for_lines_written_outside_the_queue() -> None:
    clock = FakeClock()
    q = OutputQueue(burst=3, rate=1.0, clock=clock)
    q.charge(len(b"PONG :irc.test\r\n"))
    q.charge(len(b"PONG :irc.test\r\n"))
    q.privmsg("#ops", "a")
    q.privmsg("#ops", "b")
    assert q.pop() == "PRIVMSG #ops :a"
    assert q.pop() is None  # the two PONGs took their tokens
    assert q.next_delay() == pytest.approx(1.0)
    # charging past empty makes the next line wait longer, down to -burst
    for _ in range(10):
        q.charge(10)
    assert q.next_delay() == pytest.approx(4.0)


def test_help_waits_until_others_are_empty() -> None:
    clock = FakeClock()
    q = OutputQueue(burst=1, rate=1.0, clock=clock)
    q.privmsg("#h", "help", "help")
    q.privmsg("#s", "a")
    assert q.pop() == "PRIVMSG #s :a"
    q.privmsg("#s", "b")  # arrives while help waits for a token
    clock.advance(1.0)
    assert q.pop() == "PRIVMSG #s :b"
    clock.advance(1.0)
    assert q.pop() == "PRIVMSG #h :help"


# -- token bucket ----------------------------------------------------------------


def test_no_latency_when_tokens_are_available() -> None:
    clock = FakeClock()
    q = OutputQueue(clock=clock)
    assert q.next_delay() is None
    assert q.pop() is None
    q.privmsg("#ops", "hi")
    assert q.next_delay() == 0.0
    assert q.pop() == "PRIVMSG #ops :hi"
    assert q.next_delay() is None


def test_burst_then_rate() -> None:
    clock = FakeClock()
    q = OutputQueue(burst=7, rate=1.0, clock=clock)
    for i in range(20):
        q.privmsg("#ops", f"line {i}")
    assert len(drain(q)) == 7
    assert q.pop() is None
    assert q.next_delay() == pytest.approx(1.0)
    clock.advance(0.5)
    assert q.pop() is None
    assert q.next_delay() == pytest.approx(0.5)
    clock.advance(0.5)
    assert q.next_delay() == 0.0
    assert q.pop() == "PRIVMSG #ops :line 7"
    assert q.pop() is None
    # An idle spell refills the bucket only up to the burst.
    clock.advance(3600)
    assert len(drain(q)) == 7
    assert q.depths()["server"] == 5


def test_fractional_rate() -> None:
    clock = FakeClock()
    q = OutputQueue(burst=1, rate=3.0, clock=clock)
    for i in range(31):
        q.privmsg("#ops", f"{i}")
    start = clock.now
    assert len(drain_all(q, clock)) == 31
    assert clock.now - start == pytest.approx(10.0)


def test_reset_budget_refills() -> None:
    clock = FakeClock()
    q = OutputQueue(burst=3, clock=clock)
    for i in range(10):
        q.privmsg("#ops", f"{i}")
    assert len(drain(q)) == 3
    assert q.pop() is None
    q.reset_budget()
    assert len(drain(q)) == 3


def test_alert_storm_matches_inspircd_budget() -> None:
    """150 lines of ~140 bytes at once, against a model of InspIRCd's stock class.

    The server lets 8 lines through at once, then 1/s (its own budget: the
    last line at 142 s). Ours must finish within 5% of that and never make the
    server hold a line back in its recvq.
    """
    clock = FakeClock()
    q = OutputQueue(clock=clock)
    q.set_self("masterchief", "mc", "bot.example.org")
    start = clock.now
    for i in range(150):
        assert q.privmsg("#ops", f"alert {i:03d} " + "x" * 130) == 1
    server_tokens, server_stamp, backlog = 8.0, start, 0
    times = []
    while (delay := q.next_delay()) is not None:
        clock.advance(delay)
        line = q.pop()
        assert line is not None
        assert len(line.encode()) >= 140
        times.append(clock.now - start)
        server_tokens = min(8.0, server_tokens + (clock.now - server_stamp) * 1.0)
        server_stamp = clock.now
        if server_tokens >= 1.0 - 1e-9:
            server_tokens -= 1.0
        else:
            backlog += 1
    assert len(times) == 150
    assert times[:7] == [0.0] * 7
    assert times[-1] <= 142 * 1.05
    assert backlog == 0


def test_bytes_pace_a_large_burst() -> None:
    clock = FakeClock()
    # A burst of 40 max-size lines would be 20 KB: more than the 8 KB recvq.
    q = OutputQueue(burst=40, rate=1.0, clock=clock)
    q.set_self("bot", "u", "h")
    long_text = "y" * 600
    for _ in range(40):
        q.privmsg("#ops", long_text)
    burst = drain(q)
    sent = sum(len(line.encode()) + 2 for line in burst)
    assert sent <= 8192 // 2
    assert len(burst) < 40
    # Short lines still go 40 at once.
    q2 = OutputQueue(burst=40, rate=1.0, clock=clock)
    for i in range(40):
        q2.privmsg("#ops", f"{i}")
    assert len(drain(q2)) == 40


def test_default_burst_is_by_lines() -> None:
    q = OutputQueue(clock=FakeClock())
    for _ in range(10):
        q.raw("PRIVMSG #ops :" + "z" * 496)  # 512 bytes with CRLF
    assert len(drain(q)) == 7


@pytest.mark.parametrize(
    "kwargs",
    [
        {"burst": 0},
        {"rate": 0.0},
        {"rate": -1.0},
        {"rate": math.nan},
        {"rate": math.inf},
        {"max_queue": 0},
        {"max_line_bytes": 10},
        {"recvq": 600},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="output"):
        OutputQueue(**kwargs)  # type: ignore[arg-type]


# -- overflow ----------------------------------------------------------------------


def test_overflow_is_grouped_into_one_summary_per_target() -> None:
    clock = FakeClock()
    q = OutputQueue(burst=1, max_queue=5, clock=clock)
    assert q.privmsg("#ops", [f"ops {i}" for i in range(12)]) == 5
    assert q.privmsg("#dev", ["dev 1", "dev 2", "dev 3"]) == 0
    assert q.notice("#dev", "dev 4") == 0
    assert q.depths()["server"] == 5
    assert q.stats()["grouped"] == 11
    assert q.stats()["pending_grouped"] == 11

    assert q.pop() == "PRIVMSG #ops :ops 0"  # frees a slot: the #ops summary takes it
    assert q.depths()["server"] == 5
    assert q.privmsg("#ops", "later") == 0  # still full: counted again
    lines = drain_all(q, clock)
    assert lines == [
        "PRIVMSG #ops :ops 1",
        # #dev's summary takes the slot ops 1 freed, and its turn: #dev waited
        "PRIVMSG #dev :[output] 4 more lines were not sent: queue full",
        "PRIVMSG #ops :ops 2",
        "PRIVMSG #ops :ops 3",
        "PRIVMSG #ops :ops 4",
        "PRIVMSG #ops :[output] 7 more lines were not sent: queue full",
        "PRIVMSG #ops :[output] 1 more line was not sent: queue full",
    ]
    stats = q.stats()
    assert stats["grouped"] == 12
    assert stats["summaries"] == 3
    assert stats["pending_grouped"] == 0
    assert q.privmsg("#ops", "back to normal") == 1


def test_notice_overflow_summary_is_a_notice() -> None:
    clock = FakeClock()
    q = OutputQueue(burst=1, max_queue=1, clock=clock)
    q.notice("#ops", ["a", "b", "c"])
    assert drain_all(q, clock) == [
        "NOTICE #ops :a",
        "NOTICE #ops :[output] 2 more lines were not sent: queue full",
    ]


def test_overflow_is_per_queue() -> None:
    q = OutputQueue(max_queue=2)
    assert q.privmsg("#ops", ["a", "b", "c"]) == 2
    assert q.privmsg("#ops", "m", "mode") == 1  # another queue still has room
    assert q.raw("PING x") is False  # a raw line has no target to summarise
    assert q.stats()["dropped"] == 1


# -- run() -----------------------------------------------------------------------


class Recorder:
    def __init__(self, fail_on: int | None = None) -> None:
        self.lines: list[str] = []
        self.calls = 0
        self.fail_on = fail_on
        self.changed = asyncio.Event()

    async def send(self, line: str) -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            raise ConnectionResetError("connection reset by peer")
        self.lines.append(line)
        self.changed.set()

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(2):
            while len(self.lines) < n:
                self.changed.clear()
                await self.changed.wait()


async def test_run_sends_in_order_and_wakes_on_new_lines() -> None:
    q = OutputQueue()
    rec = Recorder()
    q.privmsg("#ops", ["one", "two"])
    q.raw("MODE #ops +o alice", "mode")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(q.run(rec.send))
        await rec.wait_for(3)
        q.privmsg("#ops", "three")  # the idle loop wakes for it
        await rec.wait_for(4)
        task.cancel()
    assert rec.lines == [
        "MODE #ops +o alice",
        "PRIVMSG #ops :one",
        "PRIVMSG #ops :two",
        "PRIVMSG #ops :three",
    ]
    assert q.stats()["sent"] == 4


async def test_run_waits_for_tokens() -> None:
    # Real clock, but a fast rate: 1 token every 2 ms.
    q = OutputQueue(burst=1, rate=500.0)
    rec = Recorder()
    for i in range(5):
        q.privmsg("#ops", f"{i}")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(q.run(rec.send))
        await rec.wait_for(5)
        task.cancel()
    assert rec.lines == [f"PRIVMSG #ops :{i}" for i in range(5)]


async def test_run_keeps_the_line_when_send_fails() -> None:
    q = OutputQueue()
    lines = [f"PRIVMSG #ops :{i}" for i in range(5)]
    q.privmsg("#ops", [str(i) for i in range(5)])
    failing = Recorder(fail_on=3)
    async with asyncio.timeout(2):
        await q.run(failing.send)  # returns on ConnectionError
    assert failing.lines == lines[:2]
    assert q.depths()["server"] == 3
    assert q.stats()["requeued"] == 1

    q.privmsg("#ops", "queued while disconnected")
    q.reset_budget()
    rec = Recorder()
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(q.run(rec.send))
        await rec.wait_for(4)
        task.cancel()
    assert failing.lines + rec.lines == [*lines, "PRIVMSG #ops :queued while disconnected"]
    assert q.stats()["sent"] == 6


async def test_run_keeps_the_line_when_cancelled_mid_send() -> None:
    q = OutputQueue()
    q.privmsg("#ops", ["a", "b"])
    started = asyncio.Event()

    async def stuck(line: str) -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(q.run(stuck))
    async with asyncio.timeout(2):
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert q.depths()["server"] == 2
    assert q.pop() == "PRIVMSG #ops :a"


async def test_only_one_run_at_a_time() -> None:
    q = OutputQueue()
    rec = Recorder()
    q.privmsg("#ops", "hi")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(q.run(rec.send))
        await rec.wait_for(1)  # it is running
        with pytest.raises(RuntimeError, match="already running"):
            await q.run(rec.send)
        task.cancel()


def test_message_text_is_redacted_but_raw_lines_are_not() -> None:
    from masterchief.config.secrets import Redactor

    redactor = Redactor()
    redactor.register("hunter2-channel-key")
    redactor.register("s3cr3t-token-value")
    clock = FakeClock()
    q = OutputQueue(clock=clock, redactor=redactor)
    q.privmsg("#ops", "token is s3cr3t-token-value, done")
    q.notice("alice", "again: s3cr3t-token-value")
    q.raw("JOIN #private hunter2-channel-key", "mode")
    lines = drain_all(q, clock)
    assert "JOIN #private hunter2-channel-key" in lines
    assert "PRIVMSG #ops :token is ***, done" in lines
    assert "NOTICE alice :again: ***" in lines
    assert not any("s3cr3t" in line for line in lines)


def test_configure_changes_the_pace_live_and_keeps_queued_lines() -> None:
    """``!rehash`` of ``irc.output``: the queue keeps its lines, in order; the
    bucket holds at most the new burst; the new rate refills it."""
    clock = FakeClock()
    q = OutputQueue(burst=5, rate=1.0, clock=clock)
    for i in range(8):
        q.privmsg("#ops", f"line {i}")
    sent = [q.pop() for _ in range(5)]  # the burst
    assert all(s is not None for s in sent) and q.pop() is None
    q.configure(burst=2, rate=10.0, max_queue=300, recvq=8192)
    assert (q.burst, q.rate) == (2, 10.0)
    clock.advance(1.0)  # 10 tokens earned at the new rate, capped at the new burst
    assert [q.pop() is not None for _ in range(3)] == [True, True, False]
    clock.advance(0.1)
    rest = q.pop()
    assert rest is not None and "line 7" in str(rest)
    with pytest.raises(ValueError):
        q.configure(burst=0, rate=1.0, max_queue=300, recvq=8192)
    assert (q.burst, q.rate) == (2, 10.0)  # a refused pace changes nothing
