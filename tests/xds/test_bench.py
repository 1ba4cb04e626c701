"""`mizzen bench xds` end to end: real control-plane process, real ADS streams in worker processes."""
import os

from click.testing import CliRunner

from mizzen.bench.commands import bench
from mizzen.local.procs import alive



def test_bench_xds_small_run(tmp_path):
    import asyncio

    from mizzen.bench.xds_load import BenchOptions, run_bench

    for delta in (True, False):
        res = asyncio.run(run_bench(BenchOptions(proxies=6, services=3, changes=2, workers=2, delta=delta,
                                                 timeout=60)))
        assert res.missing == 0
        assert len(res.latencies_ms) == 6 * 2 and len(res.all_ms) == 2
        assert all(0 < x < 10_000 for x in res.latencies_ms)
        assert res.initial_sync_s > 0 and res.cp_peak_rss_mb > 10 and res.cp_cpu_total_s > 0
        assert res.connected == 6  # the control plane itself lists every stream as a connected proxy
        assert len(res.pids) == 3 and not any(alive(p) for p in res.pids)  # control plane + 2 workers reaped
        assert res.state_dir and not os.path.exists(res.state_dir)
        assert res.row().startswith("| delta | 6 | 3 | 2 |" if delta else "| sotw | 6 | 3 | 2 |")


def test_bench_cli_appends_markdown(tmp_path):
    out = tmp_path / "bench.md"
    r = CliRunner().invoke(bench, ["xds", "--proxies", "3", "--services", "2", "--changes", "1", "--sotw", "-q",
                                   "--output", str(out), "--timeout", "60", "--client", "python"])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "mizzen bench xds" in text and "| sotw | 3 | 2 | 1 |" in text and "| mode |" in text
    r = CliRunner().invoke(bench, ["xds", "--proxies", "2", "--services", "1", "--changes", "1", "-q",
                                   "--output", str(out), "--timeout", "60"])
    assert r.exit_code == 0, r.output
    text = out.read_text()  # the second run: --client auto (native when built, said in the row)
    assert text.count("| mode |") == 2 and ("| delta | 2 | 1 | 1 |" in text or "| delta, native client | 2 | 1 | 1 |" in text)


def test_bench_xds_scenarios_scoped_routes_churn_restart():
    """The extra scenarios of issue 15 on a tiny mesh: every stream (half of them scoped by a Sidecar that still
    allows svc-0) gets every route change, every timed churn change and the change after a restart."""
    import asyncio

    from mizzen.bench.xds_load import BenchOptions, run_bench

    o = BenchOptions(proxies=6, services=6, instances=3, changes=1, workers=2, scoped=True, route_changes=2,
                     churn_rate=10, churn_seconds=2, restart=True, timeout=180)
    res = asyncio.run(run_bench(o))
    assert res.missing == 0 and len(res.latencies_ms) == 6
    assert res.route_missing == 0 and len(res.route_latencies_ms) == 6 * 2
    assert res.churn_sent >= 15 and res.churn_failed == 0
    assert res.churn_missing == 0 and len(res.churn_latencies_ms) == 6 * 2  # one timed change a second
    assert res.restart_missing == 0 and res.restart_ready_s > 0 and res.restart_push_s > 0
    assert 0 < res.cp_rss_before_mb <= res.cp_peak_rss_mb
    assert len(res.pids) == 4 and not any(alive(p) for p in res.pids)  # 2 control planes + 2 workers reaped
