"""The store's interface: one Protocol per aggregate, typed records, errors.

How this works.  Every component states the slice of the store it uses as
one of the Protocols below (the outbox takes an ``OutboxStore``, the REST
poller a ``CheckpointStore``) and the composition root hands it the one
open backend, which implements ``Store``, the union of them all.  A backend
is a folder beside ``sqlite/`` that passes ``tests/store/`` (the contract
suite, parametrised by backend); nothing outside ``store/`` names a backend
except the code that opens one.

Records are frozen values; the store fills in what it owns (ids, ``seq``,
``updated_at``, ``created_at`` when empty).  Methods keep to what SQLite and
PostgreSQL both do well: no method needs a lock held across calls, and
every write is one transaction.

Two aggregates are generic so that new features need no new methods:
``LeaseStore`` (a named lock with a holder and an expiry: deploy locks now,
the one IRC speaker and singleton sources later) and ``CheckpointStore`` (a
named JSON value: REST poller state, log offsets, later stream cursors;
``to_json``/``from_json`` turn a flat dataclass into one and back).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol, TypeAlias, TypeVar

__all__ = [
    "AGGREGATES",
    "Approval",
    "Checkpoint",
    "CheckpointStore",
    "ConflictError",
    "DeliveryRecord",
    "DeliveryStore",
    "EventLogRecord",
    "EventLogStore",
    "FileIdentity",
    "FileLedgerStore",
    "FileState",
    "HealthStore",
    "JobRecord",
    "JobStore",
    "JsonObject",
    "JsonValue",
    "Lease",
    "LeaseStore",
    "LedgerCounts",
    "LedgerEntry",
    "LoggedReplayStore",
    "NewDelivery",
    "OutboxRecord",
    "OutboxStore",
    "ReplayRequest",
    "ReplayStore",
    "Store",
    "StoreError",
    "UserRecord",
    "UserStore",
    "from_json",
    "to_json",
]


class StoreError(Exception):
    """The store could not be opened or used; the message names the file."""


class ConflictError(StoreError):
    """A write broke a uniqueness rule (a handle or account already taken)."""


JsonValue: TypeAlias = (
    "bool | int | float | str | Sequence[JsonValue] | Mapping[str, JsonValue] | None"
)
JsonObject: TypeAlias = Mapping[str, JsonValue]

R = TypeVar("R")


def _frozen_empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user row with its hostmasks and channel flags, as stored."""

    handle: str
    account: str | None = None
    flags: str = ""
    info: str = ""
    password_hash: str | None = None
    created_at: str = ""
    hostmasks: tuple[str, ...] = ()
    chanflags: Mapping[str, str] = field(default_factory=_frozen_empty)


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A verified webhook delivery to store (``body`` is the JSON text)."""

    provider: str
    dedup_key: str
    event_key: str
    body: str
    meta: str = "{}"
    received_at: float | None = None  # None: now


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A verified webhook delivery as stored (``body`` is the JSON text)."""

    id: int
    provider: str
    dedup_key: str
    event_key: str
    received_at: float
    body: str
    meta: str = "{}"
    done: bool = False


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """An announcement waiting for IRC.  ``kind`` "alert" entries may be folded
    into storm summaries by ``fold_key``; ``meta`` is JSON for the folder."""

    id: int
    target: str
    text: str
    kind: str
    fold_key: str | None
    meta: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class Approval:
    """One approval of a deploy job: who (as seen then) and when."""

    handle: str
    at: float
    nick: str | None = None
    account: str | None = None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A deploy job as recorded (history and audit).  ``params`` are as
    shown to people (secret ones already ``***``); ``tail`` is the last
    lines of output."""

    id: str
    module: str
    module_version: str
    env: str
    mode: str
    digest: str
    requester: str
    status: str
    created_at: float
    params: Mapping[str, str] = field(default_factory=_frozen_empty)
    requester_account: str | None = None
    requester_nick: str | None = None
    channel: str | None = None
    approvals: tuple[Approval, ...] = ()
    reason: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    summary: str | None = None
    tail: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Lease:
    """A named lock: ``holder`` (a job id, an instance id) has it until
    ``expires_at`` (epoch s); ``info`` says who that is, for people."""

    name: str
    holder: str
    info: str
    acquired_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A named JSON value (a poller's state, a file's offset, a cursor) and
    when it was last written."""

    name: str
    value: JsonObject
    updated_at: float


FileState = Literal["seen", "dispatched", "done"]


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What ``stat`` says about a file: the same identity means the same
    file, known without reading it."""

    dev: int
    ino: int
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A watched folder's file, known by its content hash."""

    watch: str
    hash: str
    identity: FileIdentity
    path: str
    state: FileState
    updated_at: float = 0.0  # given by the store


@dataclass(frozen=True, slots=True)
class LedgerCounts:
    """How many files of a watched folder are in each ledger state."""

    seen: int = 0
    dispatched: int = 0
    done: int = 0


@dataclass(frozen=True, slots=True)
class EventLogRecord:
    """One row of the event log.  ``origin`` and ``payload`` are JSON text,
    already redacted; ``time`` is epoch seconds; ``seq`` is given by the store."""

    id: str
    time: float
    type: str
    key: str
    origin: str
    payload: str
    outcome: str = ""
    replay_of: str | None = None
    seq: int = 0


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """A request (from ``masterchief events replay``) for the running bot to
    dispatch a logged Event again.  ``state``: pending -> running -> done or
    failed; pending -> cancelled when nobody took it in time."""

    id: int
    event_id: str
    requested_at: float
    state: str
    result: str | None = None


def to_json(record: object) -> dict[str, JsonValue]:
    """A flat dataclass as a checkpoint value (its fields as they are: a
    tailer writes one every 0.2 s, so no deep copy as ``asdict`` makes)."""
    fields = dataclasses.fields(record)  # type: ignore[arg-type]
    return {f.name: getattr(record, f.name) for f in fields}


def from_json(kind: Callable[..., R], value: JsonObject) -> R:
    """A checkpoint value back as the dataclass ``kind``; keys it does not
    know are ignored, so a newer writer's extra field does not break it."""
    known = {f.name for f in dataclasses.fields(kind)}  # type: ignore[arg-type]
    args: dict[str, Any] = {k: v for k, v in value.items() if k in known}
    return kind(**args)


class HealthStore(Protocol):
    async def ping(self) -> None:
        """One trivial read: it answers (or raises)."""


class UserStore(Protocol):
    async def load_users(self) -> list[UserRecord]:
        """Every user with hostmasks and channel flags, ordered by handle."""

    async def load_users_versioned(self) -> tuple[int, list[UserRecord]]:
        """``(users_version, every user)`` from one snapshot."""

    async def users_version(self) -> int:
        """A number that changes with every write to users by any writer."""

    async def insert_user(self, user: UserRecord) -> UserRecord:
        """Add a user (``created_at`` filled in); ``ConflictError`` if the
        handle or account is taken under rfc1459 case folding."""

    async def save_user(self, user: UserRecord) -> None:
        """Replace a stored user's fields, hostmasks and channel flags;
        ``StoreError`` if there is no such user."""

    async def delete_user(self, handle: str) -> bool:
        """Remove a user with its hostmasks and channel flags."""


class DeliveryStore(Protocol):
    """Durable webhook intake: stored before the 202, deduplicated."""

    async def insert_delivery(self, delivery: NewDelivery) -> int | None:
        """Its id, or None for a duplicate (provider, dedup_key)."""

    async def record_deliveries(
        self, new: Sequence[NewDelivery], done: Sequence[int] = ()
    ) -> list[int | None]:
        """Group commit: store ``new`` and mark ``done`` dispatched in one
        transaction; each new one's id in order, None for a duplicate."""

    async def delivery_done(self, delivery_id: int) -> None:
        """Mark a delivery dispatched (its handlers have run)."""

    async def pending_deliveries(self, limit: int = 1000) -> list[DeliveryRecord]:
        """Stored, not yet dispatched, oldest first (crash recovery)."""

    async def prune_deliveries(self, older_than: float) -> int:
        """Forget dispatched deliveries received before ``older_than``."""


class OutboxStore(Protocol):
    async def outbox_add(
        self,
        target: str,
        text: str,
        *,
        kind: str = "text",
        fold_key: str | None = None,
        meta: str | None = None,
        created_at: float | None = None,
    ) -> int:
        """Queue an announcement; its id (ids grow)."""

    async def outbox_pending(self, limit: int = 1000) -> list[OutboxRecord]:
        """Announcements not yet handed to IRC, oldest first."""

    async def outbox_remove(self, ids: Sequence[int]) -> None:
        """Forget announcements that reached IRC (or were folded)."""

    async def outbox_count(self) -> int: ...


class JobStore(Protocol):
    async def job_insert(self, job: JobRecord) -> None:
        """Record a new job; ``ConflictError`` if the id exists."""

    async def job_update(self, job: JobRecord) -> bool:
        """Replace a recorded job's columns; False if there is none."""

    async def job_get(self, job_id: str) -> JobRecord | None: ...

    async def jobs_list(
        self, *, limit: int = 50, statuses: Sequence[str] | None = None
    ) -> list[JobRecord]:
        """Jobs, newest first (optionally only those in ``statuses``)."""

    async def job_last_success(self, module: str, env: str) -> JobRecord | None:
        """The newest succeeded deploy of ``module`` to ``env``."""


class LeaseStore(Protocol):
    async def lease_acquire(
        self, name: str, *, holder: str, ttl_s: float, info: str = ""
    ) -> Lease | None:
        """Take (or, for the same holder, renew) lease ``name`` for ``ttl_s``
        seconds.  None when taken; else the other holder's lease.  An
        expired lease is taken over."""

    async def lease_release(self, name: str, holder: str) -> bool:
        """Give the lease back (only if ``holder`` still holds it)."""

    async def leases(self, prefix: str = "") -> list[Lease]:
        """Leases whose name starts with ``prefix`` (expired ones too), by name."""


class CheckpointStore(Protocol):
    async def checkpoint_get(self, name: str) -> Checkpoint | None: ...

    async def checkpoint_put(self, name: str, value: JsonObject) -> None:
        """Insert or replace; ``updated_at`` is now."""

    async def checkpoints(self, prefix: str = "") -> list[Checkpoint]:
        """Checkpoints whose name starts with ``prefix``, by name."""

    async def checkpoint_delete(self, name: str) -> bool: ...


class FileLedgerStore(Protocol):
    async def file_ledger_get(self, watch: str, content_hash: str) -> LedgerEntry | None: ...

    async def file_ledger_find(self, watch: str, identity: FileIdentity) -> LedgerEntry | None:
        """The newest entry with this identity: the same file seen again."""

    async def file_ledger_put(self, entry: LedgerEntry) -> None:
        """Insert or update by (watch, hash)."""

    async def file_ledger_counts(self, watch: str) -> LedgerCounts: ...


class EventLogStore(Protocol):
    async def event_log_append(self, records: Sequence[EventLogRecord]) -> int:
        """Group commit; ids already logged are skipped; how many were new."""

    async def event_log_prune(self, older_than: float) -> int:
        """Forget events logged before ``older_than`` (and finished replay
        requests made before it); how many events went."""

    async def event_log_page(
        self,
        *,
        types: Sequence[str] = (),
        since: float | None = None,
        before_seq: int | None = None,
        limit: int = 500,
    ) -> list[EventLogRecord]:
        """Newest first: of ``types`` (all when empty), at or after
        ``since``, below ``before_seq`` (to page on)."""

    async def event_log_get(self, ids: Sequence[str]) -> list[EventLogRecord]:
        """These events in the order asked (unknown ids left out)."""

    async def event_log_count(self) -> int: ...


class ReplayStore(Protocol):
    async def replay_enqueue(
        self, event_ids: Sequence[str], *, requested_at: float | None = None
    ) -> list[int]:
        """Ask the running bot to replay these events; request ids in order."""

    async def replay_pending(self, limit: int = 50) -> list[ReplayRequest]:
        """Requests nobody has taken yet, oldest first."""

    async def replay_get(self, ids: Sequence[int]) -> list[ReplayRequest]:
        """These requests as they stand now, in id order."""

    async def replay_claim(self, request_id: int) -> bool:
        """pending -> running; False when someone else took (or cancelled) it."""

    async def replay_finish(self, request_id: int, state: str, result: str) -> bool:
        """running -> ``state`` (done or failed) with a one-line ``result``."""

    async def replay_cancel(self, request_id: int, result: str) -> bool:
        """pending -> cancelled; False when the bot took it first."""


class LoggedReplayStore(EventLogStore, ReplayStore, Protocol):
    """Replay requests with the log they replay from (the CLI, the replay source)."""


class Store(
    HealthStore,
    UserStore,
    DeliveryStore,
    OutboxStore,
    JobStore,
    LeaseStore,
    CheckpointStore,
    FileLedgerStore,
    EventLogStore,
    ReplayStore,
    Protocol,
):
    """Every aggregate: what a backend implements and the composition root holds."""

    async def close(self) -> None: ...


AGGREGATES: tuple[type, ...] = tuple(b for b in Store.__bases__ if b is not Protocol)
"""The aggregate Protocols (the contract suite checks each method is tested)."""
