"""Drive a real local mesh through the `mizzen` CLI, as a user would."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[2]
from tests.samples import ROUTING as SAMPLES  # noqa: E402  Istio's Bookinfo routing files, or the project's
BOOKINFO_MESH = ROOT / "examples" / "bookinfo" / "mesh.yaml"
LOAD_CLIENT = Path(__file__).with_name("load_client.py")


def can_run_netns() -> str | None:
    """None if end-to-end netns tests can run here, else the reason."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, iptables)"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"needs {tool} (make sysdeps)"
    return None


class Mesh:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir

    def cli(self, *args: str, check: bool = True, timeout: float = 120, input: str | None = None
            ) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "mizzen.cli.main", *args[:1], "--state-dir", str(self.state_dir), *args[1:]]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def up(self, mesh_file: Path = BOOKINFO_MESH, timeout: float = 180, extra: tuple[str, ...] = ()) -> None:
        """`mizzen up MESH --detach`, plus `extra` arguments (e.g. ("--control-planes", "2"))."""
        self.cli("up", str(mesh_file), "--detach", *extra, timeout=timeout)

    def api_get(self, path: str, socket_name: str = "api.sock", timeout: float = 10) -> dict:
        """GET one replica's REST API directly (`api.sock`, `api-1.sock`, ...), no fallback."""
        from mizzen.client import unix_request

        token = (self.state_dir / "admin.token").read_text().strip()  # the admin credential `up` made
        status, raw = unix_request(str(self.state_dir / socket_name), "GET", path,
                                   headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        assert status == 200, (path, status, raw[:300])
        return json.loads(raw)

    def down(self) -> subprocess.CompletedProcess:
        return self.cli("down", check=False, timeout=120)

    def apply(self, *files: Path | str, check: bool = True) -> subprocess.CompletedProcess:
        args: list[str] = []
        for f in files:
            args += ["-f", str(f)]
        return self.cli("apply", *args, check=check)

    def apply_text(self, text: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.cli("apply", "-f", "-", check=check, input=text)

    def get_json(self, kind: str, *extra: str) -> dict:
        return json.loads(self.cli("get", kind, *extra, "-o", "json").stdout)

    def reset_routing(self) -> None:
        """Delete every VirtualService, DestinationRule and Sidecar, then wait for proxies to sync."""
        for kind in ("virtualservices", "destinationrules", "sidecars"):
            items = self.get_json(kind, "-A").get("items", [])
            for it in items:
                self.cli("delete", kind, it["metadata"]["name"], "-n", it["metadata"]["namespace"])
        self.wait_synced()

    def exec(self, pod: str, *cmd: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return self.cli("exec", pod, "--", *cmd, check=False, timeout=timeout)

    def load(self, pod: str, url: str, *, count: int = 0, rps: float = 0, seconds: float = 0,
             headers: dict[str, str] | None = None, concurrency: int = 4, timeout: float = 300,
             field: str | None = None) -> dict:
        """`field`: the response header tallied in "served_by" (default x-served-by)."""
        args = ["python3", str(LOAD_CLIENT), url, "--concurrency", str(concurrency)]
        if field:
            args += ["--field", field]
        if count:
            args += ["--count", str(count)]
        if rps:
            args += ["--rps", str(rps)]
        if seconds:
            args += ["--seconds", str(seconds)]
        for k, v in (headers or {}).items():
            args += ["-H", f"{k}: {v}"]
        p = self.exec(pod, *args, timeout=timeout)
        assert p.returncode == 0, f"load client failed: {p.stdout}\n{p.stderr}"
        return json.loads(p.stdout.strip().splitlines()[-1])

    def load_background(self, pod: str, url: str, *, rps: float, seconds: float, concurrency: int = 4,
                        stop_file: Path | None = None, requests_per_connection: int = 0) -> subprocess.Popen:
        """Load for `seconds` at most; with `stop_file`, it ends soon after that file is created. The load runs as
        the pod's app user, so the file must be where that user can look (`stop_path()`, not pytest's 0700
        tmp_path: there the load never saw the file and ran to its `seconds` cap)."""
        if stop_file is not None:
            blocked = [str(d) for d in Path(stop_file).resolve().parents if os.stat(d).st_mode & 0o001 == 0]
            assert not blocked, f"stop file {stop_file}: the app user cannot search {blocked[0]}: use stop_path()"
        cmd = [sys.executable, "-m", "mizzen.cli.main", "exec", "--state-dir", str(self.state_dir), pod, "--",
               "python3", str(LOAD_CLIENT), url, "--rps", str(rps), "--seconds", str(seconds),
               "--concurrency", str(concurrency)] + (["--stop-file", str(stop_file)] if stop_file else []) + \
            (["--requests-per-connection", str(requests_per_connection)] if requests_per_connection else [])
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop_path(self, name: str) -> Path:
        """A stop file for `load_background` that the pods' app users can see (next to the state dir)."""
        return self.state_dir.parent / name

    def proxy_status(self) -> list[dict]:
        return json.loads(self.cli("proxy-status", "-o", "json").stdout)["items"]

    def store_revision(self) -> int:
        """The config store's revision, as the replicas that answer know it (the highest)."""
        from mizzen.client import StateLayout

        revs = []
        for sock in StateLayout(str(self.state_dir)).api_sockets():  # one per replica that may run
            if not os.path.exists(sock):
                continue
            try:
                revs.append(int(self.api_get("/healthz", Path(sock).name, timeout=5).get("store", {})
                                .get("revision") or 0))
            except Exception:  # a replica that is down (a test killed it) or still loading has no say
                continue
        return max(revs, default=0)

    def wait_synced(self, timeout: float = 60, expect: int | None = None) -> list[dict]:
        """Wait until every connected proxy has ACKed what was sent for every type, and what was sent is the
        config of the store as it is now: the replica serving it has the store's current revision in its
        snapshot, no change on its way in and no push queued (else SYNCED can describe the config from before
        the last apply: between the apply and the debounced push, or on a replica whose store watch has not
        delivered the change yet)."""
        deadline = time.monotonic() + timeout
        last: list[dict] = []
        want = self.store_revision()
        while time.monotonic() < deadline:
            last = self.proxy_status()
            live = [p for p in last if p.get("connected")]
            if (expect is None or len(live) >= expect) and live and all(
                    t.get("state") in ("SYNCED", "NOT_SENT") for p in live for t in p["types"].values()) and all(
                    p.get("configRevision", want) >= want and not p.get("configPending")
                    and not p.get("pushPending") for p in live):
                return live
            time.sleep(0.3)
        raise AssertionError(f"proxies not SYNCED within {timeout}s: {json.dumps(last, indent=1)[:3000]}")

    def status(self) -> dict:
        return json.loads(self.cli("status", "-o", "json").stdout)


def share(counts: dict[str, int], key_part: str) -> float:
    total = sum(counts.values())
    return 100.0 * sum(n for k, n in counts.items() if key_part in k) / total if total else 0.0


SLEEP_COMMAND = "[sh, -c, \"trap 'exit 0' TERM INT; while true; do sleep 3600 & wait $!; done\"]"


def hello_mesh(app: Path, *, grpc: bool = False, ext: bool = False) -> str:
    """The policy tests' mesh: `hello` (hello-a-0 in locality r1/z1, hello-b-0/1 in r1/z2) running `app` on
    8080 (and gRPC on 50051 with `grpc`), `ext` without a sidecar in r9/z9 (with `ext`), and the `sleep`
    client in r1/z1. Apps run with this interpreter: it has grpcio, the system python3 may not."""
    ports = (8080, 50051) if grpc else (8080,)

    def wl(name: str, n: int, loc: str, ports: tuple[int, ...], extra: str = "") -> str:
        return textwrap.dedent(f"""\
            ---
            apiVersion: mizzen.dev/v1
            kind: Workload
            metadata: {{name: {name}, labels: {{app: {name.split('-')[0]}}}}}
            spec:
              replicas: {n}
              command: [{sys.executable}, {app}]
              ports: [{', '.join(f'{{containerPort: {p}}}' for p in ports)}]
              locality: {loc}
            """) + extra

    svc_ports = "[{port: 8080, name: http}" + (", {port: 50051, name: grpc}]" if grpc else "]")
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Service
        metadata: {{name: hello}}
        spec:
          selector: {{app: hello}}
          ports: {svc_ports}
        """) + wl("hello-a", 1, "r1/z1", ports) + wl("hello-b", 2, "r1/z2", ports) + \
        (wl("ext", 1, "r9/z9", (8080,), "  sidecar: false\n") if ext else "") + textwrap.dedent(f"""\
        ---
        apiVersion: mizzen.dev/v1
        kind: Workload
        metadata: {{name: sleep, labels: {{app: sleep}}}}
        spec:
          command: {SLEEP_COMMAND}
          locality: r1/z1
        """)


def _pgrep_envoys() -> list[str]:
    return subprocess.run(["pgrep", "-a", "-x", "envoy"], capture_output=True, text=True).stdout.splitlines()


@contextlib.contextmanager
def running_mesh(base: Path, mesh_file: Path | None = None, *, text: str | None = None,
                 extra: tuple[str, ...] = (), synced: bool = True, expect: int | None = None) -> Iterator[Mesh]:
    """A module's mesh: `mizzen up` (the given file, or `text` written to base/mesh.yaml; the state dir is a
    fresh private one, `<tmp>/mizzen-e2e-*/.mizzen`, removed at the end), optionally wait
    until every proxy is SYNCED; at the end resume a runner a test left SIGSTOPped, `mizzen down`, and
    assert that nothing of this mesh is left: no network namespace, no Envoy, no control plane (other
    meshes' processes on the machine are left alone: only those started after ours was are compared)."""
    if text is not None:
        mesh_file = base / "mesh.yaml"
        mesh_file.write_text(text)
    # the state dir is not under pytest's /tmp/pytest-of-<user>: pytest makes that 0700 again whenever any
    # session starts, and Envoy (uid 1337) must search its way to xds.sock for as long as the mesh runs
    home = Path(tempfile.mkdtemp(prefix="mizzen-e2e-"))
    m = Mesh(home / ".mizzen")
    envoys_before = {ln.split()[0] for ln in _pgrep_envoys()}
    try:
        m.up(mesh_file or BOOKINFO_MESH, extra=extra)
        if synced:
            m.wait_synced(expect=expect)
        yield m
    finally:
        try:
            st = json.loads((m.state_dir / "status.json").read_text())
        except (OSError, ValueError):
            st = {}
        runner = (st.get("runner") or {}).get("pid")
        if runner:
            with contextlib.suppress(ProcessLookupError):
                os.kill(runner, signal.SIGCONT)  # never leave a runner stopped
        p = m.down()
        assert p.returncode == 0, p.stdout + p.stderr
        from mizzen.local.netns import mesh_id

        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"mizzen-{mesh_id(str(m.state_dir))}-" not in left, left
        ours = [ln for ln in _pgrep_envoys() if str(m.state_dir) in ln and ln.split()[0] not in envoys_before]
        assert not ours, ours
        for c in st.get("components", []):
            pid = c.get("pid")
            if c.get("kind") == "controlplane" and pid and os.path.exists(f"/proc/{pid}"):
                with contextlib.suppress(OSError):
                    assert b"controlplane" not in open(f"/proc/{pid}/cmdline", "rb").read(), \
                        f"control plane {pid} survived"
        _keep_logs(home)
        shutil.rmtree(home, ignore_errors=True)


def _keep_logs(home: Path) -> None:
    """With $MIZZEN_E2E_KEEP_LOGS=<dir>, copy every *.log of the mesh (runner, control plane, each pod's agent,
    Envoy, access and app logs) to <dir>/<the mesh's temp dir name>/ before the state dir is removed: the logs
    of a flaky run are still there when it fails."""
    keep = os.environ.get("MIZZEN_E2E_KEEP_LOGS")
    if not keep:
        return
    for f in home.rglob("*.log"):
        dst = Path(keep) / home.name / f.relative_to(home)
        with contextlib.suppress(OSError):
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
