"""Real IRC servers for the tests: InspIRCd 3 and Atheme services on loopback.

Plain Python (no pytest): the fixtures in ``tests/conftest.py``, benchmarks and
one-off scripts all use the same helpers.

- :class:`InspIRCd` writes a config into a working directory, picks free
  127.0.0.1 ports once (they stay the same across ``stop()``/``start()``, so a
  test can kill the server and bring it back where the bot expects it), starts
  ``inspircd --nofork`` with its own stdout/stderr files and waits until the
  client port accepts connections.
- :class:`Atheme` links ``atheme-services`` to an :class:`InspIRCd` as
  ``services.test`` (this is what makes the ``sasl`` cap appear) and registers
  accounts.
- :class:`IRCNetwork` is both in one object.

Every wait polls a condition with a deadline; nothing sleeps blindly.
Processes are killed when the object is closed, at interpreter exit, and (via
``PR_SET_PDEATHSIG``) when the Python process dies without cleaning up.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import itertools
import os
import random
import re
import shutil
import signal
import socket
import string
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

__all__ = [
    "LIMITS",
    "Account",
    "Atheme",
    "ConnectLimits",
    "Daemon",
    "IRCNetwork",
    "InspIRCd",
    "LimitsName",
    "ServerError",
    "free_port",
    "poll_until",
    "unique_name",
    "wait_port",
]

LOOPBACK = "127.0.0.1"
SERVICES_NAME = "services.test"
SERVER_NAME = "irc.test"
LINK_PASSWORD = "linkpass"  # loopback test link, not a secret
SYNC_MARKER = "finished synching with uplink"  # Atheme's log, once linked
READY_MARKER = "InspIRCd is now running"  # InspIRCd's stdout, once listening
BIND_FAILED_MARKER = "listeners failed to bind"  # InspIRCd's stdout
KEEP_DIRS_ENV = "MASTERCHIEF_KEEP_SERVER_DIRS"

IRCV3_MODULES = (
    "cap",
    "ircv3",
    "ircv3_accounttag",
    "ircv3_batch",
    "ircv3_capnotify",
    "ircv3_ctctags",
    "ircv3_chghost",
    "ircv3_echomessage",
    "ircv3_invitenotify",
    "ircv3_labeledresponse",
    "ircv3_msgid",
    "ircv3_servertime",
    "monitor",
    "setname",
    "botmode",
)
SERVICES_MODULES = (
    "spanningtree",
    "services_account",
    "deaf",
    "servprotect",
    "svshold",
    "chghost",
    "cban",
    "sasl",
)


class ServerError(RuntimeError):
    """A server did not start, stopped unexpectedly or refused something."""


# --------------------------------------------------------------------------- helpers


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """``n`` distinct free ports (all held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def poll_until(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    interval: float = 0.01,
    check: Callable[[], None] | None = None,
) -> Any:
    """Call ``condition`` until it returns something truthy; return that value.

    ``check`` runs on every round and may raise (e.g. "the process died") to
    stop waiting early. Raises :class:`TimeoutError` naming ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Wait until ``host:port`` accepts TCP connections."""
    poll_until(lambda: _port_open(host, port), timeout, f"{host}:{port} to accept connections")


_name_counter = itertools.count(1)


def unique_name(prefix: str = "u") -> str:
    """A nick/account/channel-safe name unique within this process (max 16 chars)."""
    suffix = "".join(random.choices(string.ascii_lowercase, k=3))
    name = f"{prefix[:9]}{next(_name_counter)}{suffix}"
    return name[:16]


# --------------------------------------------------------------------------- processes

_LIVE: set[Daemon] = set()

_PR_SET_PDEATHSIG = 1
try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-glibc platforms
    _libc = None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


@atexit.register
def _kill_leftovers() -> None:
    for daemon in list(_LIVE):
        with contextlib.suppress(Exception):
            daemon.kill()


class Daemon:
    """One foreground child process with its own stdout/stderr files.

    ``spawn(argv)`` starts it in ``workdir``; ``kill()``/``terminate()`` stop it
    (and reap it); ``check_alive()`` raises :class:`ServerError` with the log
    tails if it exited. It is killed at interpreter exit and when this Python
    process dies.
    """

    label = "daemon"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stdout_path = workdir / f"{self.label}.stdout"
        self.stderr_path = workdir / f"{self.label}.stderr"
        self.starts = 0

    # -- lifecycle -----------------------------------------------------------------

    def spawn(self, argv: list[str], env: Mapping[str, str] | None = None) -> int:
        """Start ``argv``; return the offset in ``stdout_path`` where its output begins."""
        if self.running:
            raise ServerError(f"{self.label} is already running (pid {self.pid})")
        self._reap()
        self.starts += 1
        # Append, so the output of earlier runs survives a restart.
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            marker = f"--- start #{self.starts}: {' '.join(argv)}\n".encode()
            out.write(marker)
            err.write(marker)
            out.flush()
            err.flush()
            offset = out.tell()
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.workdir,
                env=dict(env) if env is not None else None,
                preexec_fn=_die_with_parent,
                close_fds=True,
            )
        _LIVE.add(self)
        return offset

    def output_since(self, offset: int) -> str:
        """What the process wrote to stdout from ``offset`` on."""
        try:
            with self.stdout_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _reap(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            self.proc = None
            _LIVE.discard(self)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            raise ServerError(f"{self.label} exited with status {code}\n{self.diagnostics()}")

    def _signal_and_wait(self, sig: int, timeout: float) -> bool:
        proc = self.proc
        if proc is None:
            return True
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
        self.proc = None
        _LIVE.discard(self)
        return True

    def kill(self) -> None:
        """SIGKILL the process (an abrupt crash, as far as clients can tell)."""
        self._signal_and_wait(signal.SIGKILL, 10.0)

    def terminate(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if not self._signal_and_wait(signal.SIGTERM, timeout):
            self.kill()

    # -- diagnostics ---------------------------------------------------------------

    def _tail(self, path: Path, lines: int) -> str:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_files(self) -> list[Path]:
        return [self.stdout_path, self.stderr_path]

    def diagnostics(self, lines: int = 30) -> str:
        parts = []
        for path in self.log_files():
            tail = self._tail(path, lines)
            if tail:
                parts.append(f"==> {path} <==\n{tail}")
        return "\n".join(parts)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} dir={self.workdir}>"


# --------------------------------------------------------------------------- InspIRCd


@dataclass(frozen=True)
class ConnectLimits:
    """The flood-control settings of the ``<connect>`` class clients land in."""

    threshold: int
    commandrate: int
    fakelag: bool
    recvq: int
    softsendq: int
    hardsendq: int
    maxchans: int = 100
    pingfreq: int = 120

    def replace(self, **changes: Any) -> ConnectLimits:
        values = {k: getattr(self, k) for k in self.__dataclass_fields__}
        values.update({k: v for k, v in changes.items() if v is not None})
        return ConnectLimits(**values)


LIMITS: dict[str, ConnectLimits] = {
    # InspIRCd's stock class: ~8 lines pass at once, then 1 line/s; overflowing
    # the 8 KB receive queue quits the client with "RecvQ exceeded".
    "stock": ConnectLimits(
        threshold=10,
        commandrate=1000,
        fakelag=True,
        recvq=8192,
        softsendq=8192,
        hardsendq=1048576,
        maxchans=20,
    ),
    # Effectively no flood control (threshold is multiplied by 1000 inside the
    # server: larger values overflow).
    "unlimited": ConnectLimits(
        threshold=1000000,
        commandrate=1000000000,
        fakelag=False,
        recvq=4194304,
        softsendq=4194304,
        hardsendq=67108864,
        maxchans=500,
    ),
}

LimitsName = Literal["stock", "unlimited"]


# The shipped configuration `make run` uses; the fixtures start InspIRCd from
# it, moved to free ports and a temporary directory (see inspircd_config).
SHIPPED_INSPIRCD_CONF = Path(__file__).resolve().parents[1] / "inspircd" / "inspircd.conf"

# One tag: <name attr="value" ...> (possibly over several lines); InspIRCd
# writes a '"' inside a value as an entity, so a value never contains one.
_TAG = re.compile(r"<(\w+)((?:\s+[\w-]+=\"[^\"]*\")*)\s*>")
_ATTR = re.compile(r"([\w-]+)=\"([^\"]*)\"")

Tags = list[tuple[str, dict[str, str]]]


def _xml_attr(value: object) -> str:
    text = str(value)
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def parse_inspircd_conf(text: str) -> Tags:
    """The tags of an InspIRCd config in file order, values as written."""
    body = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    return [(m[1], dict(_ATTR.findall(m[2]))) for m in _TAG.finditer(body)]


def _render(tags: Tags) -> str:
    return "".join(
        f"<{name}" + "".join(f' {k}="{v}"' for k, v in attrs.items()) + ">\n"
        for name, attrs in tags
    )


def _the(tags: Tags, tag: str, /, **match: str) -> dict[str, str]:
    """The one ``<tag>`` whose attributes include ``match``."""
    found = [a for n, a in tags if n == tag and all(a.get(k) == v for k, v in match.items())]
    if len(found) != 1:
        raise ServerError(
            f"{SHIPPED_INSPIRCD_CONF}: expected one <{tag}> with {match}, found {len(found)}"
        )
    return found[0]


def inspircd_config(
    *,
    host: str,
    port: int,
    servers_port: int,
    pid_file: Path,
    log_file: Path,
    limits: ConnectLimits,
    motd_file: Path | None = None,
    tls_port: int | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    services: bool = True,
    server_name: str = SERVER_NAME,
    server_id: str = "1HR",
    services_name: str = SERVICES_NAME,
    link_password: str = LINK_PASSWORD,
    extra_config: str = "",
    shipped: Path = SHIPPED_INSPIRCD_CONF,
) -> str:
    """InspIRCd's configuration for a test server, made from ``inspircd/inspircd.conf``.

    Everything ``make run`` uses (IRCv3 modules, options, the services link)
    comes from the shipped file; only what a test server must change is
    replaced: ports, paths, names, the connect class's flood limits (the
    ``limits`` a test asks for; the shipped file has the stock ones) and its
    clone limits (many test clients share 127.0.0.1). Without ``services`` the
    link and the services modules are left out. A shipped file that no longer
    has one of the tags replaced here is an error, not a silent divergence.
    """
    a = _xml_attr
    tags = parse_inspircd_conf(shipped.read_text())
    _the(tags, "server").update(name=a(server_name), id=a(server_id))
    _the(tags, "bind", type="clients").update(address=a(host), port=str(port))
    _the(tags, "pid").update(file=a(pid_file))
    _the(tags, "log", method="file").update(target=a(log_file))
    if motd_file is not None:
        _the(tags, "files").update(motd=a(motd_file))
    else:
        tags.remove(("files", _the(tags, "files")))
    _the(tags, "connect").update(
        maxchans=str(limits.maxchans),
        pingfreq=str(limits.pingfreq),
        hardsendq=str(limits.hardsendq),
        softsendq=str(limits.softsendq),
        recvq=str(limits.recvq),
        threshold=str(limits.threshold),
        commandrate=str(limits.commandrate),
        fakelag="yes" if limits.fakelag else "no",
        localmax="1000",
        globalmax="1000",
    )
    services_tags = [
        ("bind", _the(tags, "bind", type="servers")),
        *(("module", _the(tags, "module", name=m)) for m in SERVICES_MODULES),
        ("link", _the(tags, "link")),
        ("uline", _the(tags, "uline")),
        ("sasl", _the(tags, "sasl")),
    ]
    if services:
        services_tags[0][1].update(address=a(host), port=str(servers_port))
        _the(tags, "link").update(
            name=a(services_name),
            ipaddr=a(host),
            port=str(servers_port),
            allowmask=a(f"{host}/32"),
            sendpass=a(link_password),
            recvpass=a(link_password),
        )
        _the(tags, "uline").update(server=a(services_name))
        _the(tags, "sasl").update(target=a(services_name))
    else:
        for tag in services_tags:
            tags.remove(tag)
    for m in IRCV3_MODULES:
        _the(tags, "module", name=m)  # the caps the bot's tests rely on are shipped
    if tls_port is not None:
        if cert_file is None or key_file is None:
            raise ValueError("a TLS listener needs cert_file and key_file")
        tags += [
            ("module", {"name": "ssl_gnutls"}),
            ("module", {"name": "sslinfo"}),  # WHOIS 671 "is using a secure connection"
            (
                "sslprofile",
                {
                    "name": "Clients",
                    "provider": "gnutls",
                    "certfile": a(cert_file),
                    "keyfile": a(key_file),
                    "dhfile": "",
                    "hash": "sha256",
                    "requestclientcert": "no",
                    "priority": "NORMAL",
                },
            ),
            (
                "bind",
                {
                    "address": a(host),
                    "port": str(tls_port),
                    "type": "clients",
                    "sslprofile": "Clients",
                },
            ),
        ]
    text = _render(tags)
    return text + (extra_config + "\n" if extra_config else "")


def make_self_signed_cert(directory: Path, hostname: str = "localhost") -> tuple[Path, Path]:
    """Create ``cert.pem``/``key.pem`` with certtool (gnutls-bin); return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "key.pem"
    cert = directory / "cert.pem"
    template = directory / "cert.template"
    template.write_text(
        f'cn = "{hostname}"\n'
        'organization = "MasterChief tests"\n'
        "expiration_days = 30\n"
        f'dns_name = "{hostname}"\n'
        'dns_name = "irc.test"\n'
        'ip_address = "127.0.0.1"\n'
        "tls_www_server\n"
        "signing_key\n"
        "encryption_key\n"
    )
    certtool = shutil.which("certtool")
    if certtool is None:
        raise ServerError("certtool not found: install gnutls-bin (make deps)")
    subprocess.run(
        [certtool, "--generate-privkey", "--key-type=ecdsa", "--outfile", str(key)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            certtool,
            "--generate-self-signed",
            "--load-privkey",
            str(key),
            "--template",
            str(template),
            "--outfile",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _make_workdir(prefix: str, workdir: Path | str | None) -> tuple[Path, bool]:
    if workdir is not None:
        path = Path(workdir)
        path.mkdir(parents=True, exist_ok=True)
        return path, False
    return Path(tempfile.mkdtemp(prefix=prefix)), True


class InspIRCd(Daemon):
    """An InspIRCd 3 server on free loopback ports.

    ``limits`` picks the connect class ("stock" or "unlimited", or a
    :class:`ConnectLimits`); ``threshold``/``commandrate``/``fakelag``/``recvq``
    override single values. ``tls=True`` adds a TLS listener (``tls_port``) with
    a self-signed certificate (``cert``). ``services=True`` (default) loads the
    modules and link block Atheme needs; without services linked the ``sasl``
    cap is not offered anyway.

    Ports are chosen in ``__init__`` and kept across ``stop()``/``start()``.
    """

    label = "inspircd"

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        limits: LimitsName | ConnectLimits = "unlimited",
        threshold: int | None = None,
        commandrate: int | None = None,
        fakelag: bool | None = None,
        recvq: int | None = None,
        tls: bool = False,
        services: bool = True,
        host: str = LOOPBACK,
        port: int | None = None,
        servers_port: int | None = None,
        tls_port: int | None = None,
        server_name: str = SERVER_NAME,
        services_name: str = SERVICES_NAME,
        link_password: str = LINK_PASSWORD,
        extra_config: str = "",
    ) -> None:
        path, self._owns_dir = _make_workdir("mc-inspircd-", workdir)
        super().__init__(path)
        base = LIMITS[limits] if isinstance(limits, str) else limits
        self.limits = base.replace(
            threshold=threshold, commandrate=commandrate, fakelag=fakelag, recvq=recvq
        )
        self.host = host
        self._fixed_ports = (port, servers_port, tls_port)
        self._tls = tls
        # Ports may be re-picked only until the first successful start; after
        # that they are what clients (and the bot) expect to find again.
        self._ports_published = False
        self.port = 0
        self.servers_port = 0
        self.tls_port: int | None = None
        self._pick_ports()
        self.server_name = server_name
        self.services_name = services_name
        self.link_password = link_password
        self.services = services
        self.cert: Path | None = None
        self.key: Path | None = None
        if tls:
            self.cert, self.key = make_self_signed_cert(self.workdir / "tls")
        self.config_path = self.workdir / "inspircd.conf"
        self.pid_file = self.workdir / "inspircd.pid"
        self.log_path = self.workdir / "inspircd.log"
        self.motd_path = self.workdir / "motd.txt"
        self.motd_path.write_text("MasterChief test network.\nNothing to see here.\n")
        self._extra_config = extra_config
        self._write_config()

    def _pick_ports(self) -> None:
        port, servers_port, tls_port = self._fixed_ports
        picked = iter(_free_ports(3, self.host))
        self.port = port if port is not None else next(picked)
        self.servers_port = servers_port if servers_port is not None else next(picked)
        tls_pick = next(picked)
        self.tls_port = (tls_port or tls_pick) if self._tls else None

    def _write_config(self) -> None:
        self.config_path.write_text(
            inspircd_config(
                host=self.host,
                port=self.port,
                servers_port=self.servers_port,
                pid_file=self.pid_file,
                log_file=self.log_path,
                limits=self.limits,
                motd_file=self.motd_path,
                tls_port=self.tls_port,
                cert_file=self.cert,
                key_file=self.key,
                services=self.services,
                server_name=self.server_name,
                services_name=self.services_name,
                link_password=self.link_password,
                extra_config=self._extra_config,
            )
        )

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def log_files(self) -> list[Path]:
        return [*super().log_files(), self.log_path]

    def probe_caps(self, timeout: float = 5.0) -> set[str]:
        """The capability names the server offers right now (empty if unreachable)."""
        caps: set[str] = set()
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
                sock.sendall(b"CAP LS 302\r\n")
                buf = b""
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    data = sock.recv(65536)
                    if not data:
                        break
                    buf += data
                    *complete, buf = buf.split(b"\n")
                    for raw in complete:
                        parts = raw.decode(errors="replace").rstrip("\r").split(" ")
                        # :server CAP * LS [*] :cap1 cap2=value ...
                        if len(parts) >= 4 and parts[1] == "CAP" and parts[3] == "LS":
                            more = len(parts) > 4 and parts[4] == "*"
                            text = " ".join(parts[5 if more else 4 :]).lstrip(":")
                            caps.update(c.split("=", 1)[0] for c in text.split())
                            if not more:
                                sock.sendall(b"QUIT\r\n")
                                return caps
        except OSError:
            pass
        return caps

    def start(self, timeout: float = 15.0) -> Self:
        """Start (or restart) the server and wait until it listens on all its ports.

        On the first start, ports another process grabbed since they were picked
        are replaced by new free ones; later starts reuse the same ports.
        """
        binary = shutil.which("inspircd") or "/usr/sbin/inspircd"
        if not Path(binary).exists():
            raise ServerError("inspircd not found: install it (make deps)")
        attempts = 1 if self._ports_published else 5
        for attempt in range(1, attempts + 1):
            argv = [binary, "--config", str(self.config_path), "--nofork", "--runasroot"]
            offset = self.spawn(argv)
            try:
                output = self._wait_started(offset, timeout)
                if BIND_FAILED_MARKER in output:
                    self.kill()
                    if attempt < attempts:
                        self._pick_ports()
                        self._write_config()
                        continue
                    raise ServerError(f"InspIRCd could not bind its ports:\n{output}")
                for port in (self.port, self.tls_port):
                    if port is not None:
                        self._wait_listening(port, timeout)
            except (TimeoutError, ServerError) as exc:
                diag = self.diagnostics()
                self.kill()
                raise ServerError(f"InspIRCd did not come up: {exc}\n{diag}") from None
            except BaseException:
                self.kill()
                raise
            self._ports_published = True
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait_started(self, offset: int, timeout: float) -> str:
        def started() -> str:
            out = self.output_since(offset)
            return out if READY_MARKER in out else ""

        output: str = poll_until(
            started, timeout, f"InspIRCd to start ({self.config_path})", check=self.check_alive
        )
        return output

    def _wait_listening(self, port: int, timeout: float) -> None:
        poll_until(
            lambda: _port_open(self.host, port),
            timeout,
            f"InspIRCd on {self.host}:{port}",
            check=self.check_alive,
        )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (SIGTERM, SIGKILL if needed). ``start()`` works again after."""
        self.terminate(timeout)

    def restart(self, *, kill: bool = True, timeout: float = 15.0) -> Self:
        """Kill (or gracefully stop) and start again on the same ports."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the server and remove its working directory if we created it."""
        self.kill()
        if self._owns_dir and not os.environ.get(KEEP_DIRS_ENV):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- Atheme


@dataclass(frozen=True)
class Account:
    """A services account (its name is also the nick it was registered from)."""

    name: str
    password: str
    email: str


def atheme_config(
    *,
    uplink_name: str,
    uplink_host: str,
    uplink_port: int,
    services_name: str = SERVICES_NAME,
    link_password: str = LINK_PASSWORD,
    recontime: int = 1,
) -> str:
    """Render an Atheme 7.2 configuration for a test network.

    Registration is immediate (``auth = none``), not rate limited
    (``ratelimit_*`` absent, ``flood_msgs = 0``), and any number of accounts
    may share one e-mail address (``maxusers = 0``).
    """
    modules = [
        "protocol/inspircd",
        "backend/opensex",
        "crypto/pbkdf2v2",
        "nickserv/main",
        "nickserv/register",
        "nickserv/identify",
        "nickserv/logout",
        "nickserv/info",
        "nickserv/drop",
        "nickserv/ghost",
        "nickserv/help",
        "saslserv/main",
        "saslserv/plain",
    ]
    body = "\n".join(f'loadmodule "modules/{m}";' for m in modules)
    return f"""{body}

pbkdf2v2 {{
	digest = "SHA256";
	rounds = 10000;
}};

serverinfo {{
	name = "{services_name}";
	desc = "MasterChief test services";
	numeric = "00A";
	recontime = {recontime};
	netname = "MasterChiefLocal";
	hidehostsuffix = "users.test";
	adminname = "Test Admin";
	adminemail = "admin@irc.test";
	registeremail = "noreply@irc.test";
	mta = "/bin/false";
	loglevel = {{ error; info; admin; network; wallops; register; }};
	maxlogins = 100;
	maxusers = 0;
	mdlimit = 30;
	emaillimit = 1000;
	emailtime = 1;
	auth = none;
	casemapping = rfc1459;
}};

uplink "{uplink_name}" {{
	host = "{uplink_host}";
	port = {uplink_port};
	send_password = "{link_password}";
	receive_password = "{link_password}";
}};

nickserv {{
	nick = "NickServ";
	user = "NickServ";
	host = "{services_name}";
	real = "Nickname Services";
	maxnicks = 5;
	expire = 0;
}};

saslserv {{
	nick = "SaslServ";
	user = "SaslServ";
	host = "{services_name}";
	real = "SASL Authentication Agent";
}};

general {{
	flood_msgs = 0;
	flood_time = 10;
	kline_time = 7;
	commit_interval = 5;
	uflags = {{ hidemail; }};
	cflags = {{ verbose; }};
	maxcmdlen = 500;
}};
"""


class Atheme(Daemon):
    """Atheme services linked to ``ircd`` as ``services.test``."""

    label = "atheme"

    def __init__(self, ircd: InspIRCd, workdir: Path | str | None = None) -> None:
        if not ircd.services:
            raise ValueError("this InspIRCd was configured with services=False")
        path, self._owns_dir = _make_workdir("mc-atheme-", workdir)
        super().__init__(path)
        self.ircd = ircd
        self.datadir = self.workdir / "data"
        self.datadir.mkdir(exist_ok=True)
        self.config_path = self.workdir / "atheme.conf"
        self.log_path = self.workdir / "atheme.log"
        self.pid_file = self.workdir / "atheme.pid"
        self.accounts: dict[str, Account] = {}

    def _write_config(self) -> None:
        # Written at start: the ircd's ports are final once it has started.
        ircd = self.ircd
        self.config_path.write_text(
            atheme_config(
                uplink_name=ircd.server_name,
                uplink_host=ircd.host,
                uplink_port=ircd.servers_port,
                services_name=ircd.services_name,
                link_password=ircd.link_password,
            )
        )

    def log_files(self) -> list[Path]:
        return [*super().log_files(), self.log_path]

    # -- link state ----------------------------------------------------------------

    def sync_count(self) -> int:
        """How many times Atheme has finished a burst with its uplink (from its log)."""
        try:
            return self.log_path.read_text(errors="replace").count(SYNC_MARKER)
        except FileNotFoundError:
            return 0

    def wait_synced(self, after: int = 0, timeout: float = 20.0) -> None:
        """Wait until the log shows more than ``after`` completed links."""
        poll_until(
            lambda: self.sync_count() > after,
            timeout,
            f"Atheme to link to {self.ircd.host}:{self.ircd.servers_port}",
            check=self.check_alive,
        )

    def start(self, timeout: float = 20.0) -> Self:
        """Start services and wait until they have linked and burst."""
        binary = shutil.which("atheme-services") or "/usr/sbin/atheme-services"
        if not Path(binary).exists():
            raise ServerError("atheme-services not found: install it (make deps)")
        before = self.sync_count()
        self._write_config()
        self.spawn(
            [
                binary,
                "-n",
                "-c",
                str(self.config_path),
                "-D",
                str(self.datadir),
                "-l",
                str(self.log_path),
                "-p",
                str(self.pid_file),
            ]
        )
        try:
            self.wait_synced(before, timeout)
        except (TimeoutError, ServerError) as exc:
            diag = self.diagnostics() + "\n" + self.ircd.diagnostics()
            self.kill()
            raise ServerError(f"Atheme did not link: {exc}\n{diag}") from None
        except BaseException:
            self.kill()
            raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.terminate(timeout)

    def close(self) -> None:
        self.kill()
        if self._owns_dir and not os.environ.get(KEEP_DIRS_ENV):
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- accounts ------------------------------------------------------------------

    def register(
        self,
        name: str | None = None,
        password: str | None = None,
        email: str | None = None,
        *,
        timeout: float = 20.0,
    ) -> Account:
        """Register a services account (blocking; ~1 s, the ircd's registration tick).

        Connects as nick ``name``, sends ``PRIVMSG NickServ :REGISTER`` and waits
        for 900 (logged in). Registering a name again with the same password
        returns the known account. Use ``asyncio.to_thread`` from async code.
        """
        name = name or unique_name("acct")
        password = password or f"pw-{unique_name('p')}"
        known = self.accounts.get(name.lower())
        if known is not None:
            if known.password != password:
                raise ServerError(f"account {name} already registered with another password")
            return known
        email = email or f"{name}@example.org"
        with _RawIRC(self.ircd.host, self.ircd.port, name, timeout) as irc:
            irc.send(f"PRIVMSG NickServ :REGISTER {password} {email}")
            irc.read_until(
                lambda cmd, params, line: cmd == "900",
                # On success 900 comes first; any NickServ notice before it is a
                # refusal ("already registered", "not a valid email address", ...).
                fail=lambda cmd, params, line: cmd == "NOTICE" and line.startswith(":NickServ!"),
                what=f"NickServ to register {name}",
            )
        account = Account(name, password, email)
        self.accounts[name.lower()] = account
        return account


class _RawIRC:
    """A minimal blocking IRC connection, only for setup chores (account registration)."""

    def __init__(self, host: str, port: int, nick: str, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.lines: list[str] = []
        self.nick = nick
        self.send(f"NICK {nick}")
        self.send(f"USER {nick} 0 * :MasterChief test setup")
        self.read_until(
            lambda cmd, params, line: cmd == "001",
            fail=lambda cmd, params, line: cmd in {"432", "433", "ERROR"},
            what=f"registration of {nick}",
        )

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def _lines(self) -> Iterator[str]:
        while True:
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                yield raw.rstrip(b"\r").decode(errors="replace")
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise ServerError("connection closed")
            self.buf += data

    def read_until(
        self,
        done: Callable[[str, list[str], str], bool],
        *,
        fail: Callable[[str, list[str], str], bool],
        what: str,
    ) -> str:
        try:
            for line in self._lines():
                self.lines.append(line)
                rest = line
                if rest.startswith("@"):
                    rest = rest.split(" ", 1)[1] if " " in rest else ""
                if rest.startswith(":"):
                    rest = rest.split(" ", 1)[1] if " " in rest else ""
                cmd, _, args = rest.partition(" ")
                params = args.split(" ") if args else []
                if cmd == "PING":
                    self.send(f"PONG {args}")
                    continue
                if done(cmd, params, line):
                    return line
                if fail(cmd, params, line):
                    raise ServerError(f"{what} failed: {line}")
        except (TimeoutError, OSError) as exc:
            seen = "\n".join(self.lines[-15:])
            raise ServerError(f"{what}: {exc}\nlast lines:\n{seen}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("QUIT :done")
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- network


class IRCNetwork:
    """An InspIRCd with (optionally) Atheme linked to it, in one working directory.

    ``ircd_options`` go to :class:`InspIRCd` (``limits``, ``tls``, ...).
    """

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        services: bool = True,
        **ircd_options: Any,
    ) -> None:
        self.workdir, self._owns_dir = _make_workdir("mc-ircnet-", workdir)
        self.ircd = InspIRCd(self.workdir / "inspircd", services=services, **ircd_options)
        self.atheme: Atheme | None = (
            Atheme(self.ircd, self.workdir / "atheme") if services else None
        )
        self._linked_at = -1  # ircd.starts when services were last seen linked

    @property
    def host(self) -> str:
        return self.ircd.host

    @property
    def port(self) -> int:
        return self.ircd.port

    @property
    def tls_port(self) -> int | None:
        return self.ircd.tls_port

    @property
    def services(self) -> Atheme:
        if self.atheme is None:
            raise ServerError("this network has no services")
        return self.atheme

    def start(self) -> Self:
        self.ircd.start()
        if self.atheme is not None:
            self.atheme.start()
            self._linked_at = self.ircd.starts
        return self

    def ensure_running(self, timeout: float = 20.0) -> None:
        """Bring back whatever a test left dead (ircd or services).

        Cheap when nothing happened: it only probes the link after the ircd was
        (re)started since the last check.
        """
        if not self.ircd.running:
            self.ircd.start()
        if self.atheme is None:
            return
        if not self.atheme.running:
            self.atheme.start(timeout)
            self._linked_at = self.ircd.starts
        elif self._linked_at != self.ircd.starts:
            self.wait_services(timeout)

    def restart_ircd(self, *, kill: bool = True, timeout: float = 20.0) -> None:
        """Restart the ircd on the same ports and wait for services to relink."""
        if kill:
            self.ircd.kill()
        else:
            self.ircd.stop()
        self.ircd.start()
        self.ensure_running(timeout)

    def wait_services(self, timeout: float = 20.0) -> None:
        """Wait until the ircd offers the ``sasl`` cap, i.e. services are linked.

        Use after restarting ``ircd`` by hand: Atheme reconnects on its own
        (``recontime`` is 1 s here).
        """
        if self.atheme is None:
            return
        atheme = self.atheme
        poll_until(
            lambda: "sasl" in self.ircd.probe_caps(),
            timeout,
            "services to link (sasl cap offered)",
            interval=0.05,
            check=atheme.check_alive,
        )
        self._linked_at = self.ircd.starts

    def register(
        self, name: str | None = None, password: str | None = None, email: str | None = None
    ) -> Account:
        return self.services.register(name, password, email)

    def stop(self) -> None:
        if self.atheme is not None:
            self.atheme.kill()
        self.ircd.kill()

    def close(self) -> None:
        self.stop()
        if self.atheme is not None:
            self.atheme.close()
        self.ircd.close()
        if self._owns_dir and not os.environ.get(KEEP_DIRS_ENV):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def diagnostics(self) -> str:
        parts = [self.ircd.diagnostics()]
        if self.atheme is not None:
            parts.append(self.atheme.diagnostics())
        return "\n".join(parts)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
