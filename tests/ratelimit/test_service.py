"""`mizzen ratelimit` as a real process, asked by a real gRPC client: answers, headers, shadow, delay, stats,
hot reload of its limits file, and limits read from a control plane's REST API."""
import asyncio
import time
import urllib.request

import pytest

from tests.cli.conftest import Mesh

from .procs import admin, RlsProcess, engines, free_port
from .rls_client import OK, OVER, Client, headers

pytestmark = pytest.mark.timeout(90)

LIMITS = """
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: rl, namespace: t}
spec:
  host: api
  mode: global
  response: {status: 429, body: "too many requests"}
  limits:
  - {name: tb, requestsPerUnit: 3, unit: minute, key: [{header: x-user}]}
  - {name: sh, requestsPerUnit: 1, unit: minute, algorithm: fixed_window, shadow: true}
  - {name: dl, rate: 10, burst: 1, algorithm: leaky_bucket, strategy: delay, maxDelay: 250ms}
"""




@pytest.mark.parametrize("engine", engines())
def test_answers_headers_shadow_delay_stats_and_reload(workdir, engine):
    path = f"{workdir}/limits.yaml"
    with open(path, "w") as f:
        f.write(LIMITS)
    rls = RlsProcess(workdir, path, extra=["--engine", engine])
    rls.start()

    async def go():
        c = Client(f"127.0.0.1:{rls.port}")
        try:
            got = [await c.check("t/rl/tb", [("header:x-user", "ann")]) for _ in range(4)]
            assert [r.overall_code for r in got] == [OK, OK, OK, OVER]
            assert headers(got[0]) == {"x-ratelimit-limit": "3, 3;w=60", "x-ratelimit-remaining": "2",
                                       "x-ratelimit-reset": "20"}
            h = headers(got[3])
            assert h["x-ratelimit-remaining"] == "0" and 1 <= int(h["retry-after"]) <= 20
            assert got[3].raw_body == b"too many requests"
            st = got[3].statuses[0]
            assert (st.current_limit.requests_per_unit, st.current_limit.unit, st.limit_remaining) == (3, 2, 0)
            assert (await c.check("t/rl/tb", [("header:x-user", "bob")])).overall_code == OK  # own counter
            # hits_addend 2 with one token left: rejected whole
            assert (await c.check("t/rl/tb", [("header:x-user", "cy")], hits=2)).overall_code == OK
            assert (await c.check("t/rl/tb", [("header:x-user", "cy")], descriptor_hits=2)).overall_code == OVER

            sh = [await c.check("t/rl/sh") for _ in range(3)]
            assert all(r.overall_code == OK and not r.response_headers_to_add for r in sh)

            dl = await asyncio.gather(*(c.check("t/rl/dl") for _ in range(5)))
            waits = sorted(int(next((h.value for h in r.request_headers_to_add
                                     if h.key == "x-envoy-fault-delay-request"), "0"))
                           for r in dl if r.overall_code == OK)
            # one slot every 100 ms from the first request's arrival (the others arrive a little later: how much
            # later depends on the machine's load, so only the order and the bounds are checked)
            assert waits[0] == 0 and 0 < waits[1] <= 100 and waits[1] < waits[2] <= 200, waits
            assert sum(r.overall_code == OVER for r in dl) == 2

            assert (await c.check("t/other/x")).overall_code == OK

            # hot reload: a higher limit for a new key applies without a restart
            with open(path, "w") as f:
                f.write(LIMITS.replace("requestsPerUnit: 3, unit: minute", "requestsPerUnit: 5, unit: minute"))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                r = await c.check("t/rl/tb", [("header:x-user", "dee")])
                if headers(r)["x-ratelimit-limit"].startswith("5,"):
                    break
                await asyncio.sleep(0.2)
            else:
                pytest.fail("the changed limits file was not picked up")
        finally:
            await c.close()

    try:
        asyncio.run(go())
        stats = admin(rls.admin_port, "/stats")
        tb, sh, dl = (stats["limits"][k] for k in ("t/rl/tb", "t/rl/sh", "t/rl/dl"))
        assert (tb["within_limit"], tb["over_limit"]) >= (6, 2)
        assert (sh["within_limit"], sh["shadow_mode"], sh["over_limit"]) == (1, 2, 0)
        assert (dl["delayed"], dl["over_limit"]) == (2, 2)
        assert stats["service"]["unknown_descriptors"] == 1
        assert admin(rls.admin_port, "/healthz")["ready"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{rls.admin_port}/stats/prometheus", timeout=5) as r:
            assert 'mizzen_ratelimit_over_limit_total{limit="t/rl/tb"}' in r.read().decode()
    finally:
        rls.stop()
    assert "serving 3 global limit(s)" in rls.log()


def test_limits_from_the_control_plane_and_no_answer_before_them(workdir, tmp_path):
    mesh_dir = tmp_path / "mesh"
    mesh_dir.mkdir()
    port = free_port()
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "mizzen.cli.main", "ratelimit", "--state-dir", str(mesh_dir),
                             "--port", f"127.0.0.1:{port}", "--poll-interval", "0.2"],
                            stdout=open(f"{workdir}/rls.log", "wb"), stderr=subprocess.STDOUT)
    mesh = None
    try:
        import socket

        deadline = time.monotonic() + 120  # a loaded machine imports grpc slowly
        while "waiting for limits from control plane" not in open(f"{workdir}/rls.log").read():
            assert time.monotonic() < deadline and proc.poll() is None, open(f"{workdir}/rls.log").read()
            time.sleep(0.1)

        with pytest.raises(OSError):  # no control plane yet: not listening, so Envoy's failure mode applies
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        mesh = Mesh(mesh_dir).start()
        mesh.core.apply([("rl.yaml", LIMITS)], None)
        from .procs import wait_port

        wait_port(port, 15, proc)

        async def go():
            c = Client(f"127.0.0.1:{port}")
            try:
                codes = [(await c.check("t/rl/tb", [("header:x-user", "u")])).overall_code for _ in range(4)]
                assert codes == [OK, OK, OK, OVER]
                mesh.core.apply([("rl.yaml", LIMITS.replace("name: tb,", "name: tb2,"))], None)
                deadline = time.monotonic() + 10
                while (await c.check("t/rl/tb2")).response_headers_to_add == [] and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                assert headers(await c.check("t/rl/tb2"))["x-ratelimit-limit"] == "3, 3;w=60"
            finally:
                await c.close()

        asyncio.run(go())
    finally:
        proc.terminate()
        proc.wait(10)
        if mesh is not None:
            mesh.stop()
    assert "no control-plane API answered" in open(f"{workdir}/rls.log").read()
