"""The CA's files: Istio's plug-in names, private keys 0600, created on first start, plugged in from a dir.

A mesh's CA lives in `STATE/ca/`:

    ca-cert.pem      the mesh's intermediate (signs workload certificates)
    ca-key.pem       its key (0600)
    root-cert.pem    the root every workload trusts
    cert-chain.pem   ca-cert.pem, any CA between it and the root, and the root
    root/            only when Mizzen made the root itself: root-cert.pem, root-key.pem (0600)

A root made with `mizzen ca init --root-out DIR` is `DIR/root-cert.pem` + `DIR/root-key.pem`. Plugging in
(`--from DIR`) takes either a complete intermediate (the four files above: used as they are) or a root (the
two root files: a new intermediate is minted for this mesh; the root key is not copied).

Every error names the file at fault (CaError). Writes are atomic (temp file + rename, mode set at creation);
creation is serialized with a lock file so two control-plane replicas starting together make one CA.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import os
import stat
from pathlib import Path
from typing import Iterator

from cryptography import x509

from ..client.layout import StateLayout
from .authority import (CaError, CaMaterial, PrivateKey, cert_pem, check_ca_cert, check_key, describe, issued_by,
                        key_pem, make_intermediate, make_root, parse_cert, parse_key)

log = logging.getLogger("mizzen.ca")

CA_DIRNAME = os.path.basename(StateLayout("/").ca_dir)  # "ca": named by client.layout
CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN, ROOT_KEY = (
    "ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem", "root-key.pem")
INTERMEDIATE_FILES = (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN)
ROOT_FILES = (ROOT_CERT, ROOT_KEY)
KEY_FILES = frozenset({CA_KEY, ROOT_KEY})
OWN_ROOT_DIR = "root"
# Names people use for the same things (Kubernetes TLS secrets, cert-manager, openssl how-tos): a hint only.
_ALIASES = {
    "tls.crt": CA_CERT, "ca.crt": ROOT_CERT, "tls.key": CA_KEY, "ca.key": CA_KEY, "ca.pem": CA_CERT,
    "ca-cert.crt": CA_CERT, "ca-key.key": CA_KEY, "root.pem": ROOT_CERT, "root-ca.pem": ROOT_CERT,
    "root.crt": ROOT_CERT, "rootca.pem": ROOT_CERT, "root-cert.crt": ROOT_CERT, "root.key": ROOT_KEY,
    "root-ca.key": ROOT_KEY, "root-key.key": ROOT_KEY, "chain.pem": CERT_CHAIN, "cert-chain.crt": CERT_CHAIN,
    "ca-chain.pem": CERT_CHAIN, "fullchain.pem": CERT_CHAIN, "intermediate.pem": CA_CERT,
    "intermediate.key": CA_KEY, "intermediate-key.pem": CA_KEY,
}


def mesh_ca_dir(state_dir: str | os.PathLike[str]) -> Path:
    return Path(StateLayout(os.fspath(state_dir)).ca_dir)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# ------------------------------------------------------------------------------------------------ writing
def write_file(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace `path` with `data`; the file has `mode` from its creation (no window at 0644)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_set(d: Path, files: dict[str, bytes]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    for name, data in files.items():
        write_file(d / name, data, 0o600 if name in KEY_FILES else 0o644)


@contextlib.contextmanager
def _locked(d: Path) -> Iterator[None]:
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------ reading
def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CaError(str(path), "missing") from None
    except OSError as e:
        raise CaError(str(path), f"cannot read: {e.strerror}") from None


def _warn_open_key(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s is readable by others (mode %04o): chmod 600 %s", path, mode, path)


def present(d: Path) -> list[str]:
    try:
        return sorted(p.name for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
    except FileNotFoundError:
        return []


def _no_ca_message(d: Path, found: list[str]) -> str:
    hints = [f"{n} (did you mean {_ALIASES[n.lower()]}?)" for n in found if n.lower() in _ALIASES]
    others = [n for n in found if n.lower() not in _ALIASES]
    listing = ", ".join(hints + others) if found else "nothing"
    return (f"no CA found: expected Istio's plug-in files {', '.join(INTERMEDIATE_FILES)} (an intermediate) or "
            f"{ROOT_CERT} and {ROOT_KEY} (a root); found {listing}")


def load_ca_dir(d: Path, now: dt.datetime) -> CaMaterial:
    """The four intermediate files of `d`, parsed and validated (errors name the file)."""
    found = present(d)
    missing = [n for n in INTERMEDIATE_FILES if n not in found]
    if len(missing) == len(INTERMEDIATE_FILES):
        raise CaError(str(d), _no_ca_message(d, found))
    if missing:
        hint = ""
        if missing == [CERT_CHAIN]:
            hint = f" (for an intermediate signed directly by the root: cat {CA_CERT} {ROOT_CERT} > {CERT_CHAIN})"
        raise CaError(str(d / missing[0]), f"missing: an intermediate CA needs {', '.join(INTERMEDIATE_FILES)}"
                                           f"{hint}")
    names = {n: str(d / n) for n in INTERMEDIATE_FILES}
    material = CaMaterial.from_pems(*(_read(d / n) for n in INTERMEDIATE_FILES), names=names)
    material.validate(now, names)
    _warn_open_key(d / CA_KEY)
    return material


def load_root_dir(d: Path, now: dt.datetime) -> tuple[x509.Certificate, PrivateKey]:
    """`root-cert.pem` + `root-key.pem` of `d`: a valid self-signed CA and its key."""
    found = present(d)
    if ROOT_CERT not in found and ROOT_KEY not in found:
        raise CaError(str(d), _no_ca_message(d, found))
    cert_path, key_path = d / ROOT_CERT, d / ROOT_KEY
    cert = parse_cert(str(cert_path), _read(cert_path))
    key = parse_key(str(key_path), _read(key_path))
    check_ca_cert(str(cert_path), cert, now)
    if not issued_by(cert, cert):
        raise CaError(str(cert_path), f"{describe(cert)} is not self-signed: a root is expected here (for an "
                                      f"intermediate, provide {', '.join(INTERMEDIATE_FILES)})")
    check_key(str(cert_path), str(key_path), cert, key)
    _warn_open_key(key_path)
    return cert, key


# ------------------------------------------------------------------------------------------------ operations
def write_root(d: Path, now: dt.datetime, *, force: bool = False) -> x509.Certificate:
    """`mizzen ca init --root-out DIR`: a new root (10 years) in DIR. Refuses to overwrite one unless forced."""
    d = Path(d)
    if not force and any((d / n).exists() for n in ROOT_FILES):
        raise CaError(str(d), f"already holds a root ({ROOT_CERT}/{ROOT_KEY}); pass --force to replace it "
                              f"(meshes that trust the old root will stop trusting new certificates)")
    cert, key = make_root(now)
    _write_set(d, {ROOT_CERT: cert_pem(cert), ROOT_KEY: key_pem(key)})
    return cert


def ensure_mesh_ca(state_dir: str | os.PathLike[str], now: dt.datetime, *, mesh: str = "mesh") -> CaMaterial:
    """The mesh's CA, created on first start: a root in `ca/root/` and an intermediate it signs.

    A CA dir holding some but not all of the files is an error, not a reason to start over: certificates
    issued from it would stop being trusted."""
    d = mesh_ca_dir(state_dir)
    with _locked(d):
        if any(n in present(d) for n in INTERMEDIATE_FILES):
            return load_ca_dir(d, now)
        root_dir = d / OWN_ROOT_DIR
        if any((root_dir / n).exists() for n in ROOT_FILES):
            root, root_key = load_root_dir(root_dir, now)
        else:
            root, root_key = make_root(now)
            _write_set(root_dir, {ROOT_CERT: cert_pem(root), ROOT_KEY: key_pem(root_key)})
        material = _intermediate_material(root, root_key, now, mesh)
        _write_set(d, material.pems())
        log.info("created the mesh CA in %s: root %s (until %s), intermediate %s (until %s)", d, describe(root),
                 root.not_valid_after_utc.date(), describe(material.ca_cert),
                 material.ca_cert.not_valid_after_utc.date())
        return material


def _intermediate_material(root: x509.Certificate, root_key: PrivateKey, now: dt.datetime,
                           mesh: str) -> CaMaterial:
    ca_cert, ca_key = make_intermediate(root, root_key, now, mesh=mesh)
    return CaMaterial(ca_cert, ca_key, (ca_cert,), root)


def init_from(src: Path, state_dir: str | os.PathLike[str], now: dt.datetime, *, mesh: str = "mesh",
              force: bool = False) -> tuple[CaMaterial, str]:
    """`mizzen ca init --from DIR`: plug an intermediate (used as is) or a root (a new intermediate is minted;
    the root key stays where it is) into the mesh. Returns the material and "intermediate" or "root".
    Everything is checked before anything is written."""
    src = Path(src)
    if not src.is_dir():
        raise CaError(str(src), "not a directory")
    found = present(src)
    d = mesh_ca_dir(state_dir)
    if any(n in found for n in (CA_CERT, CA_KEY, CERT_CHAIN)):
        material, kind = load_ca_dir(src, now), "intermediate"
    else:
        root, root_key = load_root_dir(src, now)
        material, kind = _intermediate_material(root, root_key, now, mesh), "root"
    with _locked(d):
        existing = [n for n in INTERMEDIATE_FILES if n in present(d)]
        if existing and not force:
            raise CaError(str(d), f"the mesh already has a CA ({', '.join(existing)}); pass --force to replace it "
                                  f"(running proxies keep their certificates until they rotate)")
        _write_set(d, material.pems())
        _drop_own_root_unless(d, material.root)
    return material, kind


def _drop_own_root_unless(d: Path, root: x509.Certificate) -> None:
    """A root Mizzen made earlier that no longer anchors the mesh must not linger (nor be picked up again)."""
    own = d / OWN_ROOT_DIR
    try:
        same = parse_cert(str(own / ROOT_CERT), (own / ROOT_CERT).read_bytes()) == root
    except (OSError, CaError):
        same = False
    if not same:
        for n in ROOT_FILES:
            with contextlib.suppress(FileNotFoundError):
                (own / n).unlink()
        with contextlib.suppress(OSError):
            own.rmdir()
