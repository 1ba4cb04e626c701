"""A real control plane process, real grpcio servers on loopback and proxyless grpcio clients in
subprocesses (GRPC_XDS_BOOTSTRAP written by `mizzen proxyless-bootstrap`). Shared by the proxyless and SDK
tests; everything started here is stopped by `close()`."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc

from mizzen.client import ApiClient
from mizzen.model.types import Instance

CLIENT = Path(__file__).with_name("xds_client.py")


def grpc_who(name: str, port: int = 0, state: dict | None = None) -> tuple[grpc.Server, int]:
    """A gRPC server answering /mizzen.Who/Call with its name (bytes in, bytes out); UNAVAILABLE while
    `state["failing"]` is true; after `state["delay"]` seconds when set."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

    def call(req: bytes, ctx) -> bytes:
        if state is not None and state.get("delay"):
            time.sleep(state["delay"])
        if state is not None and state.get("failing"):
            ctx.abort(grpc.StatusCode.UNAVAILABLE, f"{name} failing")
        return name.encode()

    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("mizzen.Who", {
        "Call": grpc.unary_unary_rpc_method_handler(call)}),))
    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server, port


class ControlPlaneProc:
    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.proc: subprocess.Popen | None = None
        self.log = state_dir / "controlplane.out"

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mizzen.cli.main", "controlplane", "--state-dir", str(self.state_dir)],
            stdout=open(self.log, "a"), stderr=subprocess.STDOUT)
        api = ApiClient(str(self.state_dir), timeout=2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"control plane exited: {self.log.read_text()[-2000:]}"
            try:
                if api.healthz().get("ready"):
                    return
            except Exception:
                pass
            time.sleep(0.1)
        raise AssertionError(f"control plane not ready: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Client:
    """One proxyless client subprocess; its JSON lines are collected by a reader thread."""

    def __init__(self, bootstrap: Path, target: str, *, seconds: float, rps: float, headers: dict | None = None,
                 stop_file: Path | None = None, prefix: tuple[str, ...] = ()):
        """`prefix`: what runs the client (e.g. `mizzen exec POD --`); the bootstrap is passed with --bootstrap."""
        env = dict(os.environ, GRPC_XDS_BOOTSTRAP=str(bootstrap))
        # --bootstrap, not `env GRPC_XDS_BOOTSTRAP=.. python`: in a pod, `env` could not re-exec an interpreter
        # that lives below a root-only directory (a pyenv under /root)
        args = [*prefix, sys.executable, str(CLIENT), target, "--bootstrap", str(bootstrap),
                "--seconds", str(seconds), "--rps", str(rps)]
        for k, v in (headers or {}).items():
            args += ["-H", f"{k}={v}"]
        if stop_file is not None:
            args += ["--stop-file", str(stop_file)]
        self.started = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.windows: list[dict] = []  # each with "at": monotonic time the line was read
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                w = json.loads(line)
            except ValueError:
                continue
            w["at"] = time.monotonic()
            self.windows.append(w)

    def since(self, t: float) -> list[dict]:
        return [w for w in list(self.windows) if w["at"] >= t]

    def wait_until(self, pred, timeout: float, what: str) -> float:
        """Wait for a window satisfying `pred`; returns when it was read (monotonic)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            ws = list(self.windows)
            for w in ws[seen:]:
                if pred(w):
                    return w["at"]
            seen = len(ws)
            assert self.proc.poll() is None or seen < len(self.windows), self.stderr()
            time.sleep(0.05)
        raise AssertionError(f"{what}: not within {timeout}s; last windows {self.windows[-5:]}\n{self.stderr()}")

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        return (self.proc.stderr.read() if self.proc.stderr else "")[-3000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def totals(windows: list[dict]) -> tuple[dict[str, int], dict[str, int]]:
    served: dict[str, int] = {}
    errors: dict[str, int] = {}
    for w in windows:
        for k, n in w["served"].items():
            served[k] = served.get(k, 0) + n
        for k, n in w["errors"].items():
            errors[k] = errors.get(k, 0) + n
    return served, errors


class Rig:
    """Control plane + `n` Who servers registered as instances of a Service (`echo`, port 50051)."""

    def __init__(self, servers: dict[str, dict[str, str]]):
        self.home = Path(tempfile.mkdtemp(prefix="mz-pl-"))  # short: unix socket paths
        self.state = self.home / "state"
        self.cp = ControlPlaneProc(self.state)
        self.servers: dict[str, tuple[grpc.Server, int]] = {}
        self.labels = servers
        self.clients: list[Client] = []

    @property
    def api(self) -> ApiClient:
        return ApiClient(str(self.state), timeout=10)

    def cli(self, *args: str, input: str | None = None) -> str:
        p = subprocess.run([sys.executable, "-m", "mizzen.cli.main", args[0], "--state-dir", str(self.state),
                            *args[1:]], capture_output=True, text=True, timeout=60, input=input)
        assert p.returncode == 0, f"{args} failed: {p.stdout}\n{p.stderr}"
        return p.stdout

    def apply(self, text: str) -> None:
        self.cli("apply", "-f", "-", input=text)

    def start(self, base_config: str) -> "Rig":
        self.cp.start()
        self.apply(base_config)
        for name, labels in self.labels.items():
            server, port = grpc_who(name)
            self.servers[name] = (server, port)
            self.register(name, labels, port)
        return self

    def register(self, name: str, labels: dict[str, str], port: int) -> None:
        self.api.put_instance(Instance(
            id=f"default.{name}", namespace="default", workload=name.rsplit("-", 1)[0], address="127.0.0.1",
            ports=(50051,), labels=tuple(sorted(labels.items())), sidecar=False, source="static",
            port_map=((50051, port),)))

    def bootstrap(self, workload: str = "client") -> Path:
        out = self.home / f"{workload}.bootstrap.json"
        self.cli("proxyless-bootstrap", workload, "-o", str(out))
        return out

    def client(self, target: str, **kw) -> Client:
        c = Client(self.bootstrap(), target, **kw)
        self.clients.append(c)
        return c

    def close(self) -> None:
        for c in self.clients:
            c.stop()
        self.cp.stop()
        for server, _ in self.servers.values():
            server.stop(0)
        shutil.rmtree(self.home, ignore_errors=True)
