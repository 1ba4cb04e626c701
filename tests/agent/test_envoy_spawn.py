"""Starting Envoy from the agent while its gRPC is busy: every spawn reaches exec.

The agent forks Envoy (`EnvoyProcess.start`: preexec_fn, and setuid to Envoy's uid when root) from a process whose
grpc.aio server streams at the same time. With gRPC core's fork support on (grpcio's default), its at-fork
handlers restart gRPC threads in the child, which crash on the poller state copied mid-poll: e2e
test_proxy_upgrade_hot_restart_under_load saw "envoy epoch 1 exited (-6)" twice in a row, and a run of this
script without `_no_grpc_fork_handlers()` lost 137 of 300 children to SIGABRT/SIGSEGV before exec. The script
runs in a fresh interpreter so that grpc is imported the way the agent imports it: after the agent's command
turned fork support off.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from .helpers import REPO, rmtree, short_tmpdir

SCRIPT = r"""
import asyncio, json, os, sys
from mizzen.agent.commands import _no_grpc_fork_handlers
_no_grpc_fork_handlers()  # what `mizzen agent` does before it imports its gRPC parts
import grpc
from mizzen.agent.envoy import EnvoyOptions, EnvoyProcess

D, N = sys.argv[1], int(sys.argv[2])
SOCK = f"unix:{D}/busy.sock"


async def echo(requests, ctx):
    async for r in requests:
        yield r


async def main():
    server = grpc.aio.server()
    h = grpc.stream_stream_rpc_method_handler(echo, request_deserializer=bytes, response_serializer=bytes)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Busy", {"Echo": h}),))
    server.add_insecure_port(SOCK)
    await server.start()
    done = asyncio.Event()

    async def client():
        async with grpc.aio.insecure_channel(SOCK) as ch:
            call = ch.stream_stream("/t.Busy/Echo", request_serializer=bytes, response_deserializer=bytes)()
            while not done.is_set():
                await call.write(b"x" * 100)
                await call.read()
            await call.done_writing()

    clients = [asyncio.create_task(client()) for _ in range(3)]
    await asyncio.sleep(0.3)
    root = os.geteuid() == 0
    # /bin/true stands in for Envoy: the spawn path (preexec_fn, uid/gid) is EnvoyProcess.start's own
    env = EnvoyProcess(EnvoyOptions(binary="/bin/true", config_path="-", work_dir=D, log_path=f"{D}/envoy.log",
                                    base_id_path=f"{D}/base-id", uid=1337 if root else None,
                                    gid=1337 if root else None))
    codes = []
    for _ in range(N):
        await env.start(0)
        codes.append(await env.wait())
    done.set()
    await asyncio.gather(*clients, return_exceptions=True)
    await server.stop(0)
    print(json.dumps(codes))


asyncio.run(main())
"""


def test_envoy_spawns_survive_a_busy_grpc_stream():
    d = short_tmpdir()
    try:
        env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
        env.pop("GRPC_ENABLE_FORK_SUPPORT", None)
        p = subprocess.run([sys.executable, "-c", SCRIPT, d, "300"], capture_output=True, text=True, timeout=120,
                           env=env)
        assert p.returncode == 0, p.stderr[-3000:]
        codes = json.loads(p.stdout.strip().splitlines()[-1])
        assert len(codes) == 300
        failed = [c for c in codes if c != 0]
        assert failed == [], f"{len(failed)} of 300 children died before exec: {sorted(set(failed))}\n" \
                             + p.stderr[-3000:]
    finally:
        rmtree(d)
