"""Per-pod credentials: issued, verified, revoked; stored only as hashes; provisioned readable by the agent only."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mizzen.ca.credentials import (ROOT_CERT_FILE, TOKEN_FILE, CredentialFileError, CredentialStore, provision_app,
                                   provision_pod, read_pod_credential, secrets_dir)
from mizzen.ca.identity import InvalidIdentity, PodIdentity


@pytest.fixture
def store(tmp_path: Path):
    s = CredentialStore(tmp_path / "credentials.db")
    yield s
    s.close()


def test_issue_verify_revoke(store: CredentialStore, tmp_path: Path) -> None:
    cart = PodIdentity("shop.cart-0", "shop", "cart", "cart")
    t1 = store.issue(cart)
    t2 = store.issue(PodIdentity("shop.web-0", "shop", "web", "web"))
    assert t1 != t2 and t1.startswith("mzp_") and len(t1) > 40
    assert store.verify(t1) == cart
    assert store.verify(t2).service_account == "web"
    for bad in ("", "mzp_", "mzp_" + "A" * 43, t1[:-1], t1 + "x", "Bearer " + t1):
        assert store.verify(bad) is None
    # a new token for the pod replaces the old one
    t3 = store.issue(cart)
    assert store.verify(t1) is None and store.verify(t3) == cart
    assert store.revoke("shop.cart-0") and store.verify(t3) is None
    assert not store.revoke("shop.cart-0")
    assert [p.pod for p in store.pods()] == ["shop.web-0"]


def test_an_apps_credential_is_its_own(store: CredentialStore) -> None:
    """The app's token (mza_) is verified by verify_app only — the CA's `verify` (agent tokens) refuses it, and an
    agent's token is no app token; issuing one leaves the other working; revoking the pod ends both."""
    cart = PodIdentity("shop.cart-0", "shop", "cart", "cart")
    agent, app = store.issue(cart), store.issue_app(cart)
    assert app.startswith("mza_") and store.verify_app(app) == cart and store.verify(agent) == cart
    assert store.verify(app) is None and store.verify_app(agent) is None
    app2 = store.issue_app(cart)  # a new app token replaces the app's, not the agent's
    assert store.verify_app(app) is None and store.verify_app(app2) == cart and store.verify(agent) == cart
    assert [p.pod for p in store.pods()] == ["shop.cart-0"]  # the pods with an agent credential
    assert store.revoke("shop.cart-0")
    assert store.verify(agent) is None and store.verify_app(app2) is None
    sdk_only = store.issue_app(PodIdentity("shop.web-0", "shop", "web"))  # a sidecar-less pod: an app token only
    assert store.revoke("shop.web-0") and store.verify_app(sdk_only) is None


def test_tokens_are_stored_as_hashes_only(store: CredentialStore, tmp_path: Path) -> None:
    token = store.issue(PodIdentity("default.a-0", "default", "a"))
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("credentials.db"))
    assert token.encode() not in raw and token[4:].encode() not in raw


def test_a_second_replica_sees_the_same_credentials(store: CredentialStore, tmp_path: Path) -> None:
    other = CredentialStore(tmp_path / "credentials.db")
    try:
        token = store.issue(PodIdentity("default.a-0", "default", "a"))
        assert other.verify(token).pod == "default.a-0"
        store.revoke("default.a-0")
        assert other.verify(token) is None
    finally:
        other.close()


def test_identity_is_validated() -> None:
    with pytest.raises(InvalidIdentity, match="namespace 'Shop'"):
        PodIdentity("Shop.a-0", "Shop", "a")
    with pytest.raises(InvalidIdentity, match="service account 'a b'"):
        PodIdentity("shop.a-0", "shop", "a b")


def test_provisioned_files(tmp_path: Path) -> None:
    pod = tmp_path / "pods" / "a-0"
    pod.mkdir(parents=True)
    d = provision_pod(pod, "mzp_secret", b"ROOT PEM")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE((d / TOKEN_FILE).stat().st_mode) == 0o400
    assert stat.S_IMODE((d / ROOT_CERT_FILE).stat().st_mode) == 0o444
    assert read_pod_credential(pod) == ("mzp_secret", b"ROOT PEM")
    provision_pod(pod, "mzp_new", b"ROOT PEM")  # re-provisioning replaces a read-only token
    assert read_pod_credential(pod)[0] == "mzp_new"
    with pytest.raises(CredentialFileError, match="cannot read the pod credential"):
        read_pod_credential(tmp_path / "pods" / "missing")
    app = provision_app(pod, "mza_secret", uid=os.getuid(), gid=os.getgid())
    assert app == pod / "app-secrets" / TOKEN_FILE and app.read_text() == "mza_secret"
    assert stat.S_IMODE(app.stat().st_mode) == 0o400 and stat.S_IMODE(app.parent.stat().st_mode) == 0o700
    assert provision_app(pod, "mza_new", uid=os.getuid(), gid=os.getgid()).read_text() == "mza_new"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another uid")
def test_another_uid_cannot_read_the_token() -> None:
    base = Path(tempfile.mkdtemp(prefix="mzcred-", dir="/tmp"))  # not under pytest's 0700 tmp dir
    try:
        pod = base / "a-0"
        pod.mkdir()
        os.chmod(base, 0o755)
        os.chmod(pod, 0o755)
        control = pod / "envoy.yaml"  # a file the other uid can read: proves the path is traversable
        control.write_text("x")
        os.chmod(control, 0o644)
        provision_pod(pod, "mzp_secret", b"ROOT PEM")
        paths = [str(control), str(secrets_dir(pod) / TOKEN_FILE), str(secrets_dir(pod) / ROOT_CERT_FILE)]
        code = (f"import os; os.setgid(65534); os.setuid(65534)\n"
                f"for p in {paths!r}:\n"
                f"    try:\n        open(p).read(); print('read', p)\n"
                f"    except PermissionError:\n        print('denied', p)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["read", paths[0], "denied", paths[1], "denied", paths[2]]
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run processes as other uids")
def test_only_the_apps_uid_reads_its_credential() -> None:
    base = Path(tempfile.mkdtemp(prefix="mzcred-", dir="/tmp"))
    try:
        pod = base / "a-0"
        pod.mkdir()
        os.chmod(base, 0o755)
        os.chmod(pod, 0o711)  # as the runner makes it
        token = provision_app(pod, "mza_secret", uid=65534, gid=65534)
        code = ("import sys\ntry:\n    print(open(sys.argv[1]).read())\nexcept PermissionError:\n    print('denied')\n")
        seen = {}
        for uid in (65534, 65533):  # the app's uid, another pod's app
            out = subprocess.run(["setpriv", "--reuid", str(uid), "--regid", str(uid), "--clear-groups",
                                  sys.executable, "-c", code, str(token)], capture_output=True, text=True, timeout=30)
            assert out.returncode == 0, out.stderr
            seen[uid] = out.stdout.strip()
        assert seen == {65534: "mza_secret", 65533: "denied"}
    finally:
        shutil.rmtree(base, ignore_errors=True)
