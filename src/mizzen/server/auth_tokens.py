"""API tokens: who may call the control plane's REST API, stored as hashes, shared by every replica.

A token is `mzt_` + 256 random bits (URL-safe base64). The store keeps its SHA-256 and what it stands for
(`TokenRecord`): an **admin** token (everything) or a **tenant** token (its namespaces, optionally read-only),
an optional expiry, a name. The token itself is shown once, when it is made, and never stored; a leaked
database reveals no token. (A fast hash is right here: the secret is 256 random bits, not a password.)

Backends, chosen with the config store (`token_store_for`):
- `SqliteTokenStore(STATE/tokens.db)` (WAL, mode 0600): every replica on the state dir sees a new or revoked
  token at its next lookup, since each lookup is a query.
- `EtcdTokenStore(client, prefix)`: keys `<prefix>tokens/<sha256>` holding the record's JSON, so control planes
  on several hosts that share an etcd cluster share tokens. Lookups are served from memory, kept current by
  one etcd watch (a revocation reaches every control plane within the watch's latency); while etcd is
  unreachable the last known tokens keep working and writes fail with the store's "unavailable" error.

The state dir's **admin credential** (`STATE/admin.token`, 0600) is made by the first control plane that starts
on the state dir (`ensure_admin_token`, serialized by a lock file) and is what the CLI uses by default. It is
marked `bootstrap` in the store and cannot be revoked through the API (one could lock oneself out of the
mesh); to replace it, delete the file and restart the control plane: a new one is made and the old one is
removed from the store.
"""
from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import socket
import threading
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterator, Protocol

from ..sqlitedb import open_shared

log = logging.getLogger("mizzen.auth")

TOKEN_PREFIX = "mzt_"
MAX_TOKEN_LENGTH = 200
ADMIN, TENANT = "admin", "tenant"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token_id() -> str:
    return "tok-" + secrets.token_hex(5)


def plausible(token: str) -> bool:
    """Worth a lookup: an API token's shape (anything else is refused without touching the store)."""
    return token.startswith(TOKEN_PREFIX) and 20 < len(token) <= MAX_TOKEN_LENGTH and token.isascii()


@dataclass(frozen=True)
class TokenRecord:
    """What a token stands for (never the token itself)."""

    id: str
    role: str  # ADMIN | TENANT
    namespaces: tuple[str, ...] = ()  # a tenant's namespaces
    read_only: bool = False
    name: str = ""
    created: float = 0.0
    expires: float | None = None  # unix time; None: never
    bootstrap: bool = False  # the state dir's admin credential (not revocable through the API)

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def to_dict(self) -> dict[str, Any]:
        """The API's form (camelCase)."""
        return {"id": self.id, "role": self.role, "namespaces": list(self.namespaces), "readOnly": self.read_only,
                "name": self.name, "created": self.created, "expires": self.expires, "bootstrap": self.bootstrap}

    def to_json(self) -> str:
        d = asdict(self)
        d["namespaces"] = list(self.namespaces)
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> "TokenRecord":
        d = json.loads(text)
        d["namespaces"] = tuple(d.get("namespaces") or ())
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class TokenStore(Protocol):
    def add(self, record: TokenRecord, digest: str) -> None: ...

    def lookup(self, digest: str) -> TokenRecord | None: ...

    def list(self) -> builtins.list[TokenRecord]: ...

    def remove(self, token_id: str) -> bool: ...

    def close(self) -> None: ...


def issue(store: TokenStore, record: TokenRecord) -> tuple[str, TokenRecord]:
    """Make a token for `record` (its id filled in when empty), store its hash; returns the token (the only
    time it is seen) and the record stored."""
    token = new_token()
    record = replace(record, id=record.id or new_token_id())
    store.add(record, token_sha256(token))
    return token, record


# ------------------------------------------------------------------------------------------------ SQLite
_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_tokens (
  id TEXT PRIMARY KEY,
  token_sha256 TEXT NOT NULL UNIQUE,
  record TEXT NOT NULL
);
"""


def _private_file(path: str) -> None:
    """Create `path` 0600 if absent (SQLite then gives its -wal/-shm files the same mode)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class SqliteTokenStore:
    """Token hashes in SQLite (WAL), shared by the control-plane replicas of a state dir. Thread-safe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        _private_file(self.path)
        self._lock = threading.Lock()
        self._db = open_shared(self.path, _SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, record: TokenRecord, digest: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO api_tokens VALUES (?, ?, ?)", (record.id, digest, record.to_json()))

    def lookup(self, digest: str) -> TokenRecord | None:
        with self._lock:
            row = self._db.execute("SELECT record FROM api_tokens WHERE token_sha256 = ?", (digest,)).fetchone()
        return TokenRecord.from_json(row[0]) if row else None

    def list(self) -> builtins.list[TokenRecord]:
        with self._lock:
            rows = self._db.execute("SELECT record FROM api_tokens").fetchall()
        return sorted((TokenRecord.from_json(r[0]) for r in rows), key=lambda r: (r.created, r.id))

    def remove(self, token_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM api_tokens WHERE id = ?", (token_id,)).rowcount > 0


# -------------------------------------------------------------------------------------------------- etcd
class EtcdTokenStore:
    """Token hashes in etcd under `<prefix>tokens/`, served from memory and kept current by a watch."""

    def __init__(self, client: Any, *, prefix: str = "/mizzen/", timeout: float | None = None,
                 own_client: bool = False) -> None:
        from ..etcd.client import prefix_end

        self.client = client
        self._own_client = own_client
        self.timeout = client.timeout if timeout is None else timeout
        self._base = (prefix.rstrip("/") + "/tokens/").encode()
        self._lock = threading.Lock()
        self._by_digest: dict[str, TokenRecord] = {}
        self._seen = 0
        self._load()
        self._watch = client.watch(self._base, prefix_end(self._base), self._seen + 1, self._on_events,
                                   on_compacted=self._on_compacted, name="etcd-token-watch")

    @classmethod
    def open(cls, endpoints: builtins.list[str], **kw: Any) -> "EtcdTokenStore":
        from ..etcd.client import EtcdClient

        return cls(EtcdClient(endpoints, timeout=kw.pop("timeout", 5.0)), own_client=True, **kw)

    def _digest(self, key: bytes) -> str:
        return key[len(self._base):].decode()

    def _load(self) -> None:
        from ..etcd.client import EtcdError
        from ..store.base import StoreUnavailable

        try:
            rev, kvs = self.client.range_prefix(self._base, timeout=self.timeout)
        except EtcdError as e:
            raise StoreUnavailable(f"token store unavailable: {e}") from None
        table: dict[str, TokenRecord] = {}
        for kv in kvs:
            try:
                table[self._digest(kv.key)] = TokenRecord.from_json(kv.value)
            except (ValueError, TypeError) as e:
                log.error("etcd token store: ignoring %s: %s", kv.key.decode(errors="replace"), e)
        with self._lock:
            self._by_digest, self._seen = table, max(self._seen, rev)

    def _on_events(self, events: builtins.list[Any], header_revision: int) -> None:
        from ..etcd import messages as pb

        with self._lock:
            for ev in events:
                digest = self._digest(ev.kv.key)
                if ev.type == pb.EVENT_DELETE:
                    self._by_digest.pop(digest, None)
                    continue
                try:
                    self._by_digest[digest] = TokenRecord.from_json(ev.kv.value)
                except (ValueError, TypeError) as e:
                    log.error("etcd token store: ignoring %s: %s", ev.kv.key.decode(errors="replace"), e)
            if events:
                self._seen = max(self._seen, int(events[-1].kv.mod_revision))

    def _on_compacted(self, compact_revision: int) -> int:
        self._load()
        return self._seen + 1

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        from ..etcd.client import EtcdError
        from ..store.base import StoreUnavailable

        try:
            return fn(*args, timeout=self.timeout, **kw)
        except EtcdError as e:
            raise StoreUnavailable(f"token store unavailable: {e}") from None

    def add(self, record: TokenRecord, digest: str) -> None:
        self._call(self.client.put, self._base + digest.encode(), record.to_json().encode())
        with self._lock:  # visible here at once (the watch brings it to the other control planes)
            self._by_digest[digest] = record

    def lookup(self, digest: str) -> TokenRecord | None:
        with self._lock:
            return self._by_digest.get(digest)

    def list(self) -> builtins.list[TokenRecord]:
        with self._lock:
            items = builtins.list(self._by_digest.values())
        return sorted(items, key=lambda r: (r.created, r.id))

    def remove(self, token_id: str) -> bool:
        with self._lock:
            digests = [d for d, r in self._by_digest.items() if r.id == token_id]
        removed = False
        for d in digests:
            resp = self._call(self.client.delete, self._base + d.encode())
            removed = removed or int(resp.deleted) > 0
            with self._lock:
                self._by_digest.pop(d, None)
        return removed

    def close(self) -> None:
        self._watch.cancel()
        if self._own_client:
            self.client.close()


def token_store_for(config_store: Any, state_dir: str) -> TokenStore:
    """The token store that goes with a config store: etcd next to an etcd config store (same cluster and
    prefix: every control plane of the mesh shares it), else SQLite in the state dir."""
    client = getattr(config_store, "client", None)
    base = getattr(config_store, "_base", None)
    if client is not None and isinstance(base, bytes) and base.endswith(b"/config/"):
        return EtcdTokenStore(client, prefix=base[: -len(b"config/")].decode())
    from ..client.layout import StateLayout

    return SqliteTokenStore(StateLayout(state_dir).tokens_db)


# ------------------------------------------------------------------------------------- the admin credential
@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _write_private(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def admin_name(state_dir: str) -> str:
    """The bootstrap admin token's name: which state dir (on which host) it belongs to."""
    return f"admin of {socket.gethostname()}:{os.path.abspath(state_dir)}"


@dataclass
class AdminCredential:
    token: str
    record: TokenRecord
    created: bool = field(default=False)


def ensure_admin_token(store: TokenStore, path: str, state_dir: str, now: float) -> AdminCredential:
    """The state dir's admin credential: the one in `path` if the store knows it (or, if the store lost it —
    e.g. a new etcd cluster — registered again), else a new one written to `path` (0600) and stored, after
    removing this state dir's previous bootstrap tokens. Two replicas starting together make one."""
    name = admin_name(state_dir)
    with _locked(path + ".lock"):
        token = ""
        with contextlib.suppress(FileNotFoundError):
            with open(path) as f:
                token = f.read().strip()
        if token and plausible(token):
            rec = store.lookup(token_sha256(token))
            if rec is not None and rec.role == ADMIN and not rec.expired(now):
                return AdminCredential(token, rec)
            rec = TokenRecord(new_token_id(), ADMIN, name=name, created=now, bootstrap=True)
            store.add(rec, token_sha256(token))
            log.warning("the admin credential in %s was not in the token store: registered it again", path)
            return AdminCredential(token, rec)
        if token:
            log.warning("%s does not hold a Mizzen token: replacing it", path)
        for old in store.list():
            if old.bootstrap and old.name == name:
                store.remove(old.id)
                log.info("removed the previous admin credential %s of this state dir", old.id)
        rec = TokenRecord(new_token_id(), ADMIN, name=name, created=now, bootstrap=True)
        token = new_token()
        store.add(rec, token_sha256(token))
        _write_private(path, token)
        log.info("made the admin credential %s in %s (0600): the CLI uses it by default", rec.id, path)
        return AdminCredential(token, rec, created=True)


__all__ = ["ADMIN", "TENANT", "AdminCredential", "EtcdTokenStore", "SqliteTokenStore", "TokenRecord", "TokenStore",
           "ensure_admin_token", "issue", "new_token", "plausible", "token_sha256",
           "token_store_for"]
