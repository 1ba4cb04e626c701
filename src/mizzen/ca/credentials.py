"""Per-pod credentials: how the control plane knows which pod an agent speaks for.

The runner, when it creates a pod, asks for a credential (`CredentialStore.issue(PodIdentity)`): a random
256-bit bearer token. It writes the token into the pod dir (`provision_pod`: `pods/<pod>/secrets/token`,
directory 0700 and file 0400, owned by root, the agent's uid) next to the mesh's root certificate, with which
the agent checks that it talks to the real control plane. The store keeps only the token's SHA-256, bound to
the pod's identity (namespace, service account, workload); the token itself exists only in the pod dir.
An agent presents it as `authorization: Bearer <token>`; the CA signs for the identity it is bound to, and
(phase 2) the registry accepts instances of that pod only.

Revoking is deleting the row (pod deleted, or a new token issued for the pod: the old one stops working).
The store is SQLite (WAL) so that every control-plane replica on a state dir sees the same credentials.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
import time
from pathlib import Path

from ..client.layout import PodDir
from ..sqlitedb import open_shared
from .identity import PodIdentity

TOKEN_PREFIX = "mzp_"  # recognizable in logs and by secret scanners
SECRETS_DIRNAME = os.path.basename(PodDir("/").secrets_dir)  # "secrets": named by client.layout
TOKEN_FILE = "token"
ROOT_CERT_FILE = "root-cert.pem"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pod_credentials (
  pod TEXT PRIMARY KEY,
  token_sha256 TEXT NOT NULL UNIQUE,
  namespace TEXT NOT NULL,
  service_account TEXT NOT NULL,
  workload TEXT NOT NULL,
  created REAL NOT NULL
);
"""


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class CredentialStore:
    """Token hashes -> pod identities, in SQLite (shared by control-plane replicas). Thread-safe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self._db = open_shared(self.path, _SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def issue(self, identity: PodIdentity) -> str:
        """A new token for the pod; any earlier token of the pod stops working."""
        token = new_token()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO pod_credentials VALUES (?, ?, ?, ?, ?, ?)",
                (identity.pod, token_sha256(token), identity.namespace, identity.service_account,
                 identity.workload, time.time()))
        return token

    def verify(self, token: str) -> PodIdentity | None:
        """The identity a token stands for, or None (unknown, revoked or malformed)."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = token_sha256(token)
        with self._lock:
            row = self._db.execute(
                "SELECT token_sha256, pod, namespace, service_account, workload FROM pod_credentials "
                "WHERE token_sha256 = ?", (digest,)).fetchone()
        if row is None or not hmac.compare_digest(row[0], digest):
            return None
        return PodIdentity(pod=row[1], namespace=row[2], service_account=row[3], workload=row[4])

    def revoke(self, pod: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM pod_credentials WHERE pod = ?", (pod,)).rowcount > 0

    def pods(self) -> list[PodIdentity]:
        with self._lock:
            rows = self._db.execute(
                "SELECT pod, namespace, service_account, workload FROM pod_credentials ORDER BY pod").fetchall()
        return [PodIdentity(pod=r[0], namespace=r[1], service_account=r[2], workload=r[3]) for r in rows]


# ------------------------------------------------------------------------------------------------ the pod side
def secrets_dir(pod_dir: str | os.PathLike[str]) -> Path:
    return Path(PodDir(os.fspath(pod_dir)).secrets_dir)


def provision_pod(pod_dir: str | os.PathLike[str], token: str, root_pem: bytes, *, uid: int = 0,
                  gid: int = 0) -> Path:
    """Runner side: put the pod's token (0400) and the mesh root (0444) in `<pod_dir>/secrets/` (0700), owned
    by the agent's uid. Neither the app (a non-root uid) nor Envoy (uid 1337) can open the directory."""
    d = secrets_dir(pod_dir)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    for name, data, mode in ((TOKEN_FILE, token.encode(), 0o400), (ROOT_CERT_FILE, root_pem, 0o444)):
        path = d / name
        tmp = d / f".{name}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        if (uid, gid) != (os.getuid(), os.getgid()):
            os.chown(path, uid, gid)
    if (uid, gid) != (os.getuid(), os.getgid()):
        os.chown(d, uid, gid)
    return d


class CredentialFileError(RuntimeError):
    pass


def read_pod_credential(pod_dir: str | os.PathLike[str]) -> tuple[str, bytes]:
    """Agent side: (token, root certificate PEM) from `<pod_dir>/secrets/`."""
    d = secrets_dir(pod_dir)
    try:
        token = (d / TOKEN_FILE).read_text().strip()
        root = (d / ROOT_CERT_FILE).read_bytes()
    except OSError as e:
        raise CredentialFileError(f"{e.filename}: cannot read the pod credential ({e.strerror}); the runner "
                                  f"provisions it when it creates the pod") from None
    if not token.startswith(TOKEN_PREFIX):
        raise CredentialFileError(f"{d / TOKEN_FILE}: not a Mizzen pod credential")
    return token, root


__all__ = ["CredentialStore", "CredentialFileError", "PodIdentity", "new_token", "provision_pod",
           "read_pod_credential", "secrets_dir", "token_sha256"]
