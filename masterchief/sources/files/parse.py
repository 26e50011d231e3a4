"""Safe parsing for watched folders: no I/O policy here, only bytes in, documents out.

How this works.  ``open_checked`` opens a candidate file with ``O_NOFOLLOW |
O_NONBLOCK`` (a symlink fails, a FIFO cannot block us) and checks the *open*
descriptor: a regular file, inside the watched root once resolved, no larger
than ``max_bytes``.  Checking the descriptor rather than the name closes the
gap between "checked" and "read".  Everything refused raises ``Refused`` whose
``reason`` is a fixed phrase safe to show in a channel (no paths, no
exception text); ``detail`` is for the log.

``independent_stream`` gives one more reader over an opened file with its own
position (``pread`` on a duplicate descriptor), so several readers -- one per
handler iterating a CSV -- never share an offset, and each keeps working
whatever happens to the others' descriptors.

Parsers: JSON (``json``), YAML (``yaml.safe_load`` only: no Python tags),
XML (``defusedxml`` with DTDs forbidden, so entity expansion and external
entities never happen), CSV (``csv.DictReader`` over a byte-counting line
source: rows stream, a field or the file over its limit raises ``Refused``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from xml.etree.ElementTree import Element

    from _typeshed import WriteableBuffer

__all__ = [
    "CSV_FIELD_LIMIT",
    "FORMATS",
    "Refused",
    "csv_header",
    "detect_format",
    "independent_stream",
    "iter_csv",
    "open_checked",
    "parse_document",
    "read_limited",
]

FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".xml": "xml", ".csv": "csv"}
CSV_FIELD_LIMIT = 131_072
"""Longest CSV field accepted (bytes of text); also csv's own default limit."""


class Refused(Exception):
    """A file we will not read.  ``reason`` is safe for a channel; ``detail`` is for the log."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason if not detail else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def detect_format(name: str) -> str | None:
    """``json``/``yaml``/``xml``/``csv`` from the file name, or None."""
    return FORMATS.get(Path(name).suffix.lower())


def open_checked(path: Path, root: Path, max_bytes: int) -> tuple[IO[bytes], os.stat_result]:
    """Open ``path`` for reading if it is a regular file under ``root`` (both
    resolved) of at most ``max_bytes``; ``Refused`` otherwise."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise Refused("file vanished") from None
    if stat.S_ISLNK(st.st_mode):
        raise Refused("symlinks are not read")
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise Refused("path cannot be resolved") from None
    if not real.is_relative_to(root.resolve()):
        raise Refused("outside the watched folder")
    if not stat.S_ISREG(st.st_mode):
        raise Refused("not a regular file")
    try:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(real, flags)
    except OSError as exc:
        raise Refused("cannot be opened", str(exc)) from None
    fh = os.fdopen(fd, "rb")
    try:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise Refused("changed while being opened")
        if fst.st_size > max_bytes:
            raise Refused("over the size limit", f"{fst.st_size} > {max_bytes} bytes")
    except BaseException:
        fh.close()
        raise
    return fh, fst


class _PositionalReader(io.RawIOBase):
    """Raw reads at our own offset (``pread``) on a descriptor we own."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = 0

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = os.pread(self._fd, len(view), self._pos)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def independent_stream(fh: IO[bytes], buffer_size: int = 1 << 16) -> IO[bytes]:
    """A new buffered reader of the file behind ``fh``, from its start.

    It reads through its own duplicate of the descriptor with ``pread``: its
    position is its own (a ``dup`` alone would share the offset), closing
    ``fh`` does not affect it, and the file read is the one ``open_checked``
    checked even if the name has been replaced since.  ``ValueError`` when
    ``fh`` is already closed."""
    fd = os.dup(fh.fileno())
    try:
        return io.BufferedReader(_PositionalReader(fd), buffer_size)
    except BaseException:
        os.close(fd)
        raise


def read_limited(fh: IO[bytes], max_bytes: int) -> bytes:
    """The whole file, refusing it if it grew past ``max_bytes`` since the check."""
    data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise Refused("over the size limit", f"more than {max_bytes} bytes")
    return data


def parse_document(fmt: str, data: bytes) -> Any:
    """Parse a JSON, YAML or XML document; ``Refused`` when it is invalid or hostile."""
    if fmt == "json":
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise Refused("not valid JSON", str(exc)) from None
    if fmt == "yaml":
        try:
            return yaml.safe_load(data)
        except (yaml.YAMLError, RecursionError) as exc:
            raise Refused("not valid (safe) YAML", str(exc)) from None
    if fmt == "xml":
        # Imported on the first XML file: the XML stack (pyexpat, ElementTree,
        # defusedxml) costs ~1 MB of RSS that a bot without XML folders need
        # not carry.
        import defusedxml
        import defusedxml.ElementTree

        try:
            root: Element = defusedxml.ElementTree.fromstring(
                data, forbid_dtd=True, forbid_entities=True, forbid_external=True
            )
        except defusedxml.DefusedXmlException as exc:
            raise Refused("XML with a DTD or entities is refused", repr(exc)) from None
        except (SyntaxError, ValueError) as exc:  # ParseError is a SyntaxError
            raise Refused("not valid XML", str(exc)) from None
        return root
    raise Refused("unsupported format", fmt)


class _Lines:
    """Text lines from a binary file, counting bytes against a limit."""

    def __init__(self, fh: IO[bytes], max_bytes: int, encoding: str) -> None:
        self._fh = fh
        self._left = max_bytes
        self._encoding = encoding

    def __iter__(self) -> Iterator[str]:
        while True:
            # A line longer than the field limit (plus slack) is refused before
            # it is all in memory: readline's size argument bounds it.
            raw = self._fh.readline(CSV_FIELD_LIMIT * 2)
            if not raw:
                return
            self._left -= len(raw)
            if self._left < 0:
                raise Refused("over the size limit", "CSV grew past max_bytes")
            if len(raw) >= CSV_FIELD_LIMIT * 2 and not raw.endswith(b"\n"):
                raise Refused("CSV line too long")
            try:
                yield raw.decode(self._encoding)
            except UnicodeDecodeError as exc:
                raise Refused("CSV is not valid UTF-8", str(exc)) from None


def iter_csv(
    fh: IO[bytes], max_bytes: int, *, encoding: str = "utf-8-sig"
) -> Iterator[dict[str, str]]:
    """Rows of a CSV file with a header line, as dicts, streamed.

    Raises ``Refused`` (while iterating) for a malformed file, a field over
    ``CSV_FIELD_LIMIT`` or more than ``max_bytes`` read."""
    reader = csv.DictReader(_Lines(fh, max_bytes, encoding), restkey="_extra", restval="")
    try:
        for row in reader:
            for value in row.values():
                if isinstance(value, str) and len(value) > CSV_FIELD_LIMIT:
                    raise Refused("CSV field too long")
            yield row
    except csv.Error as exc:
        raise Refused("not valid CSV", str(exc)) from None


def csv_header(data: bytes) -> list[str]:
    """The header of a CSV file, from its first line (to refuse a broken file up front)."""
    try:
        text = data.split(b"\n", 1)[0].decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Refused("CSV is not valid UTF-8", str(exc)) from None
    for row in csv.reader(io.StringIO(text)):
        if any(cell.strip() for cell in row):
            return row
    raise Refused("CSV has no header")
