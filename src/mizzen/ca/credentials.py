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

A pod's *app* gets a credential of its own (`issue_app`: `mza_…`, a row of `app_credentials`): bound to the
same identity but read-only — it reads the config the pod's calls are routed by (`server.auth.readable`: what
`mizzen.sdk` needs), never registers an instance, and the certificate service does not accept it (`verify`
knows agent credentials only). The runner writes it to `pods/<pod>/app-secrets/token` (`provision_app`:
directory 0500 and file 0400, owned by the app's uid: readable by that app only, not by other pods' apps).
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
APP_TOKEN_PREFIX = "mza_"  # a pod app's read-only credential
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
CREATE TABLE IF NOT EXISTS app_credentials (
  pod TEXT PRIMARY KEY,
  token_sha256 TEXT NOT NULL UNIQUE,
  namespace TEXT NOT NULL,
  service_account TEXT NOT NULL,
  workload TEXT NOT NULL,
  created REAL NOT NULL
);
"""
_TABLES = {TOKEN_PREFIX: "pod_credentials", APP_TOKEN_PREFIX: "app_credentials"}


def new_token(prefix: str = TOKEN_PREFIX) -> str:
    return prefix + secrets.token_urlsafe(32)


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
        """A new agent token for the pod; any earlier one of the pod stops working."""
        return self._issue(identity, TOKEN_PREFIX)

    def issue_app(self, identity: PodIdentity) -> str:
        """A new read-only token for the pod's app; any earlier one stops working (the agent's is untouched)."""
        return self._issue(identity, APP_TOKEN_PREFIX)

    def _issue(self, identity: PodIdentity, prefix: str) -> str:
        token = new_token(prefix)
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO {_TABLES[prefix]} VALUES (?, ?, ?, ?, ?, ?)",
                (identity.pod, token_sha256(token), identity.namespace, identity.service_account,
                 identity.workload, time.time()))
        return token

    def verify(self, token: str) -> PodIdentity | None:
        """The identity an agent token stands for, or None (unknown, revoked, malformed — or an app's token)."""
        return self._verify(token, TOKEN_PREFIX)

    def verify_app(self, token: str) -> PodIdentity | None:
        """The identity an app token stands for, or None."""
        return self._verify(token, APP_TOKEN_PREFIX)

    def _verify(self, token: str, prefix: str) -> PodIdentity | None:
        if not token or not token.startswith(prefix) or len(token) > 200:
            return None
        digest = token_sha256(token)
        with self._lock:
            row = self._db.execute(
                f"SELECT token_sha256, pod, namespace, service_account, workload FROM {_TABLES[prefix]} "
                "WHERE token_sha256 = ?", (digest,)).fetchone()
        if row is None or not hmac.compare_digest(row[0], digest):
            return None
        return PodIdentity(pod=row[1], namespace=row[2], service_account=row[3], workload=row[4])

    def revoke(self, pod: str) -> bool:
        """Both credentials of the pod (its agent's and its app's) stop working."""
        with self._lock:
            n = self._db.execute("DELETE FROM pod_credentials WHERE pod = ?", (pod,)).rowcount
            n += self._db.execute("DELETE FROM app_credentials WHERE pod = ?", (pod,)).rowcount
        return n > 0

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


def provision_app(pod_dir: str | os.PathLike[str], token: str, *, uid: int, gid: int) -> Path:
    """Runner side: the app's read-only credential in `<pod_dir>/app-secrets/token` (directory 0700, file 0400,
    both owned by the app's uid: no other pod's app, and not Envoy, can read it). Returns the file."""
    d = Path(PodDir(os.fspath(pod_dir)).app_secrets_dir)
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    path = d / TOKEN_FILE
    tmp = d / f".{TOKEN_FILE}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(token.encode())
    os.chmod(tmp, 0o400)
    if (uid, gid) != (os.getuid(), os.getgid()):
        os.chown(tmp, uid, gid)
        os.chown(d, uid, gid)
    os.replace(tmp, path)
    return path


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


__all__ = ["APP_TOKEN_PREFIX", "CredentialStore", "CredentialFileError", "PodIdentity", "new_token", "provision_app",
           "provision_pod", "read_pod_credential", "secrets_dir", "token_sha256"]
