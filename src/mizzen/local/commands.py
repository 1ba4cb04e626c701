"""`mizzen up | down | exec | status | rollout restart | scale | proxy upgrade`: run a mesh on this machine
(local/runner.py) and operate it (over the runner's control channel, `client.RunnerClient`)."""
from __future__ import annotations

import json
import os
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from ..api import InvalidConfig
from ..cli.options import state_dir_option
from ..cli.render import input_issue_line, print_table
from ..client import ApiClient, HttpError, PodDir, RunnerClient, StateLayout, Unavailable
from . import netns
from .options import LISTENER_DRAIN_SECONDS
from .meshstate import failing_logs, live_status, not_ready_reasons, read_json, runner_alive, stop_mesh, summary_lines
from .users import as_user, path_for

if TYPE_CHECKING:
    from .runner import Runner
from .procs import alive, env_without_proxies, tail

RESTARTS_BEFORE_FAILING = 3


def _echo_err(msg: str) -> None:
    click.echo(msg, err=True)


# ---------------------------------------------------------------------------------------------- up

@click.command()
@click.argument("mesh_file", metavar="MESH.yaml", type=click.Path(dir_okay=False))
@click.option("-d", "--detach", is_flag=True, help="run in the background; return once the mesh is ready")
@state_dir_option
@click.option("--mode", type=click.Choice(["auto", "netns", "loopback"]), default="auto", show_default=True,
              help="netns: a network namespace per pod with iptables capture (root); "
                   "loopback: every pod on 127.0.0.1 with an explicit HTTP proxy")
@click.option("--envoy-concurrency", type=click.IntRange(1, 64), default=1, show_default=True,
              help="worker threads per Envoy")
@click.option("--timeout", type=float, default=120.0, show_default=True,
              help="seconds to wait for the mesh to be ready")
@click.option("--drain-seconds", type=float, default=2.0, show_default=True,
              help="how long a sidecar drains when its pod stops")
@click.option("--listener-drain-seconds", type=click.FloatRange(0), default=LISTENER_DRAIN_SECONDS,
              show_default=True,
              help="after a config change, how long a replaced listener filter chain lives (Envoy's --drain-time-s): "
                   "requests in flight longer are cut, and a connection opened before the change may serve one "
                   "more request under the old config within it (Istio's drainDuration is 45 s)")
@click.option("--withdraw-timeout", type=float, default=10.0, show_default=True,
              help="when a pod stops: at most this long to wait for callers' proxies to drop its endpoint")
@click.option("--app-stop-seconds", type=float, default=10.0, show_default=True,
              help="when a pod stops: SIGTERM to SIGKILL grace of its app")
@click.option("--control-planes", type=click.IntRange(1, 3), default=1, show_default=True,
              help="control-plane replicas on the same store (api.sock/xds.sock, then api-<i>.sock/xds-<i>.sock); "
                   "every sidecar lists them all and fails over when one dies")
@click.option("--outbound-traffic-policy", type=click.Choice(["ALLOW_ANY", "REGISTRY_ONLY"]), default="ALLOW_ANY",
              show_default=True, help="mesh-wide egress default (a Sidecar's outboundTrafficPolicy wins): "
                                      "REGISTRY_ONLY refuses destinations the mesh does not know")
@click.option("--trust-domain", default="cluster.local", show_default=True,
              help="SPIFFE trust domain of the workload identities (spiffe://TD/ns/NS/sa/SA)")
@click.option("--cert-ttl", default="24h", show_default=True,
              help="validity of workload certificates (e.g. 24h, 20s); sidecars renew them at half of it")
@click.option("--ratelimit/--no-ratelimit", default=True, show_default=True,
              help="run the global rate-limit service (`mizzen ratelimit`, on STATE/ratelimit.sock) for "
                   "RateLimits with mode: global")
@click.option("--ratelimit-redis", default=None, metavar="URL|managed",
              help="keep its counters in Redis (redis://HOST:PORT/DB), or 'managed': a redis-server the runner "
                   "starts on STATE/redis.sock; default: in memory (one replica)")
@click.option("--ratelimit-replicas", type=click.IntRange(1, 4), default=1, show_default=True,
              help="rate-limit service replicas (ratelimit.sock, ratelimit-1.sock, ...; needs --ratelimit-redis); "
                   "every sidecar lists them all")
@click.option("--store", "store_url", default=lambda: os.environ.get("MIZZEN_STORE"), show_default="sqlite",
              help="where the control planes keep config and registry: sqlite (files in the state dir) or an "
                   "existing etcd cluster, etcd://host:port[,host:port...][/prefix][?ttl=S] (`mizzen etcd up` "
                   "starts one); `mizzen up` never erases it")
@click.option("--etcd-ca", default=None, type=click.Path(dir_okay=False, exists=True), help="etcd members' CA (TLS)")
@click.option("--etcd-cert", default=None, type=click.Path(dir_okay=False, exists=True), help="etcd client certificate")
@click.option("--etcd-key", default=None, type=click.Path(dir_okay=False, exists=True), help="key of --etcd-cert")
@click.option("--consul-api", default="auto", show_default=True, metavar="HOST:PORT|auto|off",
              help="serve the Consul HTTP API (auto: 127.0.0.1:8500 when it is free, else a free port; "
                   "`mizzen status -o json` shows it as consulApi)")
@click.option("--host", "host", default=None, metavar="NAME",
              help="run as host NAME of a multi-host mesh: only the Workloads placed on it (spec.host), no "
                   "control plane of its own (with --join)")
@click.option("--join", "join", default=None, metavar="HOST:PORT[,...]",
              help="with --host: the control planes' REST API addresses (one per replica; TLS, checked against "
                   "STATE_DIR/ca/root-cert.pem, with the token in STATE_DIR/admin.token)")
@click.option("--xds", "xds", default=None, metavar="HOST:PORT[,...]",
              help="with --host: the control planes' xDS addresses the sidecars use (default: --join's hosts, "
                   "port 15010)")
@click.option("--ca", "ca", default=None, metavar="HOST:PORT[,...]",
              help="with --host: the control planes' certificate services (TLS) the sidecars get workload "
                   "certificates from (default: --join's hosts, port 15020)")
@click.option("--default-host", default=None, metavar="NAME",
              help="with --host: the host that runs Workloads without spec.host (the control plane's)")
@click.option("--pod-subnet", default=None, metavar="CIDR",
              help="with --host: this host's pod addresses (a /24 of 10.244.0.0/16), behind a gateway (.1) here")
@click.option("--route", "routes", multiple=True, metavar="CIDR",
              help="with --host: what pods reach through that gateway (other hosts' pods, the hosts' network)")
@click.option("--exclude-outbound", "exclude_outbound", multiple=True, metavar="CIDR",
              help="destinations sidecars never capture (the control plane's address)")
def up(mesh_file: str, detach: bool, state_dir: str, mode: str, envoy_concurrency: int, timeout: float,
       drain_seconds: float, listener_drain_seconds: float, withdraw_timeout: float, app_stop_seconds: float,
       control_planes: int,
       trust_domain: str, cert_ttl: str, outbound_traffic_policy: str, ratelimit: bool,
       ratelimit_redis: str | None, ratelimit_replicas: int, store_url: str | None, etcd_ca: str | None,
       etcd_cert: str | None, etcd_key: str | None, consul_api: str, host: str | None, join: str | None,
       xds: str | None, ca: str | None, default_host: str | None, pod_subnet: str | None, routes: tuple[str, ...],
       exclude_outbound: tuple[str, ...]) -> None:
    """Start a mesh from MESH.yaml: control plane (with the mesh CA), a pod per workload replica with its
    sidecar (and its workload certificate), the apps. A mesh file with hosts (Host documents, Workload spec.host)
    runs each host in a namespace of its own."""
    from ..ca.identity import InvalidIdentity, check_trust_domain
    from ..server.commands import resolve_store_url, seconds
    from .runner import Runner, RunnerError, setup_logging

    try:
        check_trust_domain(trust_domain)
        ttl = seconds(cert_ttl, "--cert-ttl")
    except (InvalidIdentity, ValueError) as e:
        raise click.BadParameter(str(e)) from None
    kw = dict(mode=mode, concurrency=envoy_concurrency, timeout=timeout, drain_seconds=drain_seconds,
              listener_drain_seconds=listener_drain_seconds,
              withdraw_timeout=withdraw_timeout, app_stop_seconds=app_stop_seconds, control_planes=control_planes,
              trust_domain=trust_domain, cert_ttl_seconds=ttl, outbound_traffic_policy=outbound_traffic_policy,
              ratelimit=ratelimit, ratelimit_replicas=ratelimit_replicas, ratelimit_redis=ratelimit_redis,
              store_url=resolve_store_url(store_url, etcd_ca, etcd_cert, etcd_key), consul_api=consul_api)
    if (host is None) != (join is None):
        raise click.UsageError("--host and --join go together (a host of a multi-host mesh joins its control plane)")
    runner: Any
    if host is not None:
        runner = Runner(mesh_file, state_dir, **kw, host_options=_host_options(
            host, join or "", xds, ca, default_host, pod_subnet, routes, exclude_outbound))
    elif _has_hosts(mesh_file):
        from .multihost import MultiHostRunner

        runner = MultiHostRunner(mesh_file, state_dir, **kw)
    else:
        runner = Runner(mesh_file, state_dir, **kw)
    try:
        result = runner.preflight()
    except InvalidConfig as e:
        for issue in e.issues:
            _echo_err(input_issue_line(issue))
        sys.exit(1)
    except RunnerError as e:
        raise click.ClickException(str(e)) from None
    for w in result.warnings:
        _echo_err(f"Warning: {w}")
    if not detach:
        setup_logging(sys.stderr)

        def on_ready(st: dict[str, Any]) -> None:
            click.echo("\n".join(summary_lines(st)))
            click.echo("mesh ready; Ctrl-C stops it")

        runner.on_ready = on_ready
        sys.exit(runner.run())
    sys.exit(_up_detached(runner, timeout))


def _addresses(text: str | None, what: str) -> tuple[str, ...]:
    out = tuple(a.strip() for a in (text or "").split(",") if a.strip())
    for a in out:
        host, sep, port = a.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise click.BadParameter(f"{a!r}: expected HOST:PORT", param_hint=what)
    return out


def _beside(api: tuple[str, ...], base: str | int) -> tuple[str, ...]:
    """The same hosts' other port: replica i (API on API_PORT + i) serves it on base + i."""
    from .hosts import API_PORT

    out = []
    for a in api:
        host, _, port = a.rpartition(":")
        i = int(port) - API_PORT
        out.append(f"{host}:{int(base) + (i if 0 <= i < 3 else 0)}")
    return tuple(out)


def _host_options(host: str, join: str, xds: str | None, ca: str | None, default_host: str | None, pod_subnet: str | None,
                  routes: tuple[str, ...], exclude: tuple[str, ...]) -> dict[str, Any]:
    """`mizzen up --host NAME --join ...`: one host of a multi-host mesh (local/hosts.py)."""
    import ipaddress

    from .hosts import CA_PORT, XDS_PORT

    for cidr in (pod_subnet, *routes, *exclude):
        if cidr:
            try:
                ipaddress.ip_network(cidr)
            except ValueError as e:
                raise click.BadParameter(str(e)) from None
    api = _addresses(join, "--join")
    return {"host": host, "default_host": default_host or host, "join_api": api,
            "join_xds": _addresses(xds, "--xds") or _beside(api, XDS_PORT),
            "join_ca": _addresses(ca, "--ca") or _beside(api, CA_PORT),
            "pod_subnet": pod_subnet, "routed": tuple(routes), "outbound_excluded": tuple(exclude)}


def _has_hosts(mesh_file: str) -> bool:
    """Does the mesh file place anything on hosts? (A parse error is reported by the runner's preflight.)"""
    from ..api import load_sources
    from ..manifests import read_inputs
    from .hosts import plan_hosts
    from .runner import RunnerError

    try:
        return plan_hosts(load_sources(read_inputs([mesh_file])).resources) is not None
    except (InvalidConfig, RunnerError, OSError):
        return False


def _up_detached(runner: Any, timeout: float) -> int:
    state_dir, layout = runner.state_dir, runner.layout
    os.makedirs(layout.logs_dir, exist_ok=True)
    log_path = layout.runner_log
    try:  # a status.json from an earlier run must not be mistaken for this one's
        os.unlink(layout.status_file)
    except FileNotFoundError:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # first child: new session, fork again so the runner is no session leader
        try:
            os.close(r)
            os.setsid()
            if os.fork() > 0:
                os._exit(0)
            _daemon_main(runner, w, log_path)
        finally:
            os._exit(1)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r) as f:
        data = f.read().strip()
    if not data.isdigit():
        _echo_err(f"error: the runner did not start; see {log_path}\n{tail(log_path, 20)}")
        return 1
    return wait_ready(state_dir, int(data), timeout, log_path)


def _daemon_main(runner: Runner, w: int, log_path: str) -> None:
    from .runner import setup_logging

    code = 1
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
        sys.stdout = os.fdopen(1, "w", buffering=1)
        sys.stderr = os.fdopen(2, "w", buffering=1)
        os.chdir("/")
        setup_logging(sys.stderr)
        os.write(w, f"{os.getpid()}\n".encode())
        os.close(w)
        code = runner.run()
    except BaseException as e:  # noqa: BLE001 - the daemon must always exit through os._exit
        try:
            import traceback

            traceback.print_exc()
            sys.stderr.write(f"runner: {type(e).__name__}: {e}\n")
        except Exception:
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(code)


def wait_ready(state_dir: str, runner_pid: int, timeout: float, runner_log: str) -> int:
    """Wait until every sidecar is ready and every instance with ports is registered (0), or report why
    not (1): the runner died, start-up failed, a component keeps crashing, or the time is up."""
    deadline = time.monotonic() + timeout
    st: dict[str, Any] | None = None
    while True:
        st = live_status(state_dir)
        if st is not None and (st.get("runner") or {}).get("pid") != runner_pid:
            st = None  # not yet written by this runner
        if not alive(runner_pid):
            st = read_json(StateLayout(state_dir).status_file)
            reason = (st or {}).get("error") or "the runner exited"
            _echo_err(f"error: mesh did not start: {reason}")
            _echo_err(f"--- {runner_log}\n{tail(runner_log, 25)}")
            return 1
        if st is not None:
            if st.get("phase") == "failed":
                _echo_err(f"error: mesh did not start: {st.get('error')}")
                _wait_gone(runner_pid, 30)
                return 1
            if st.get("ready"):
                missing = _unregistered(state_dir, st)
                if missing is not None and not missing:
                    click.echo("\n".join(summary_lines(st)))
                    click.echo(f"mesh ready; stop it with `mizzen down --state-dir {st.get('stateDir')}`")
                    return 0
            crashing = [c for c in st.get("components", [])
                        if c.get("restarts", 0) >= RESTARTS_BEFORE_FAILING
                        and c.get("state") not in ("ready", "running")]
            if crashing:
                names = ", ".join(f"{c['name']} ({c['restarts']} restarts)" for c in crashing)
                _report(st, f"keeps crashing: {names}")
                return 1
        if time.monotonic() > deadline:
            _report(st, f"not ready after {timeout:.0f}s")
            return 1
        time.sleep(0.3)


def _unregistered(state_dir: str, st: dict[str, Any]) -> list[str] | None:
    try:
        ids = {str(i.get("id")) for i in ApiClient(state_dir, timeout=5).instances()}
    except Exception:
        return None
    return [p["name"] for p in st.get("pods", []) if p.get("ports") and f"{p['namespace']}.{p['name']}" not in ids]


def _wait_gone(pid: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.1)


def _report(st: dict[str, Any] | None, headline: str) -> None:
    _echo_err(f"error: mesh {headline}")
    if st is None:
        _echo_err("  the runner wrote no status yet")
        return
    for reason in not_ready_reasons(st):
        _echo_err(f"  {reason}")
    for title, text in failing_logs(st)[:4]:
        _echo_err(f"--- {title}\n{text}")
    _echo_err(f"the mesh is still running: inspect it with `mizzen status`, stop it with "
              f"`mizzen down --state-dir {st.get('stateDir')}`")


# -------------------------------------------------------------------------------------------- down

@click.command()
@state_dir_option
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="seconds to wait for an orderly stop before killing what is left")
def down(state_dir: str, timeout: float) -> None:
    """Stop the mesh: apps, then sidecars (drained), then the control plane; remove the namespaces."""
    state_dir = os.path.abspath(state_dir)
    meshid = netns.mesh_id(state_dir)
    st = read_json(StateLayout(state_dir).status_file)
    had_netns = netns.unavailable_reason() is None and bool(netns.mesh_leftovers(meshid))
    if runner_alive(state_dir) is None and not had_netns and (st is None or st.get("phase") in ("stopped", "failed")):
        click.echo(f"no mesh running in {state_dir}")
        return
    forced = stop_mesh(state_dir, timeout, out=click.echo)
    if forced:
        click.echo(f"cleaned up by force: {', '.join(forced)}")
    if netns.unavailable_reason() is None:
        left = netns.mesh_leftovers(meshid)
        if left:
            raise click.ClickException(f"could not remove: {', '.join(left)}")
    click.echo(f"mesh {meshid} stopped")


# -------------------------------------------------------------------------------------------- exec

def find_pod(st: dict[str, Any], target: str, namespace: str | None = None) -> dict[str, Any]:
    """A pod by name, else the first replica of a workload of that name, else of a workload whose
    `app` label is that name."""
    pods = [p for p in st.get("pods", []) if namespace is None or p.get("namespace") == namespace]
    for p in pods:
        if p["name"] == target:
            return p
    for key in (lambda p: p.get("workload"), lambda p: (p.get("labels") or {}).get("app")):
        matches = [p for p in pods if key(p) == target]
        if matches:
            return matches[0]
    names = ", ".join(p["name"] for p in pods) or "none"
    raise click.ClickException(f"no pod, workload or app named {target!r} (pods: {names})")


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("target", metavar="POD|WORKLOAD|APP")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD...")
@click.option("-n", "--namespace", default=None, help="only pods of this namespace")
@click.option("--root", "as_root", is_flag=True,
              help="run CMD as root (e.g. iptables), not as the pod's app user")
@state_dir_option
def exec_(target: str, command: tuple[str, ...], namespace: str | None, as_root: bool, state_dir: str) -> None:
    """Run CMD inside a pod's network namespace (its sidecar captures the traffic), as the pod's app user (the
    uid its app runs as; --root to stay root), with the pod's POD_NAME, POD_NAMESPACE, POD_IP, MIZZEN_STATE_DIR
    and MIZZEN_TOKEN_FILE (its app's credential, for mizzen.sdk). Exit code passes through."""
    st = live_status(state_dir)
    if st is None or st.get("phase") in ("stopped", "dead", "failed"):
        raise click.ClickException(f"no mesh running in {state_dir} (start one with `mizzen up`)")
    pod = find_pod(st, target, namespace)
    env = env_without_proxies()
    # what the pod's app is given (launcher._app_child): its names, its mesh, its own read-only API credential
    env.update({"POD_NAME": pod["name"], "POD_NAMESPACE": str(pod.get("namespace") or "default"),
                "POD_IP": str(pod.get("ip") or ""), "MIZZEN_STATE_DIR": StateLayout(state_dir).root,
                "MIZZEN_TOKEN_FILE": (PodDir(pod["dir"]) if pod.get("dir") else
                                      StateLayout(state_dir).pod(pod["name"])).app_token})
    argv = list(command)
    if not as_root and pod.get("runAsUser") is not None and os.geteuid() == 0:
        user = (int(pod["runAsUser"]), int(pod.get("runAsGroup") or pod["runAsUser"]))
        argv = as_user(user, argv)
        env["PATH"] = path_for(user, env.get("PATH")) or ""
        if pod.get("dir"):
            env["HOME"] = StateLayout(state_dir).pod(pod["name"]).home
    if pod.get("netns"):
        if pod["netns"] not in netns.list_namespaces():
            raise click.ClickException(f"pod {pod['name']}: namespace {pod['netns']} is gone")
        argv = netns.exec_argv(pod["netns"], argv)
    elif pod.get("sidecar") and pod.get("outboundPort"):  # loopback: the sidecar is an explicit proxy
        proxy = f"http://127.0.0.1:{pod['outboundPort']}"
        env.update({"HTTP_PROXY": proxy, "http_proxy": proxy,
                    "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"})
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        raise click.ClickException(f"cannot run {argv[0]}: {e.strerror}") from None


# ------------------------------------------------------------------------------------------ status

@click.command()
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@state_dir_option
def status(output: str, state_dir: str) -> None:
    """The mesh's processes (control plane, each pod's agent, Envoy and app) with liveness checked now."""
    st = live_status(state_dir)
    if st is None:
        raise click.ClickException(f"no mesh in {os.path.abspath(state_dir)} (no status.json)")
    if output == "json":
        click.echo(json.dumps(st, indent=2))
        return
    runner = st.get("runner") or {}
    click.echo(f"mesh {st.get('meshId')} ({st.get('mode')}): {st.get('phase')}"
               f"{', ready' if st.get('ready') else ''}; runner pid {runner.get('pid')}"
               f"{'' if runner.get('alive') else ' (not running)'}; state dir {st.get('stateDir')}")
    if st.get("store") or st.get("consulApi"):
        click.echo(f"store {st.get('store') or 'sqlite'}; Consul API {st.get('consulApi') or 'off'}")
    if st.get("error"):
        click.echo(f"error: {st['error']}")
    rows = [[c["name"], c.get("pid"), c.get("address"),
             f"{c.get('state')} (epoch {c['epoch']})" if c.get("epoch") else c.get("state"), c.get("restarts") or ""]
            for c in st.get("components", [])]
    print_table(["NAME", "PID", "ADDRESS", "STATE", "RESTARTS"], rows, empty="No components.")


# ------------------------------------------------------------------- operations on a running mesh

def run_operation(state_dir: str, path: str, body: dict[str, Any]) -> Any:
    """Ask the runner (over STATE/runner.sock) for an operation, print its progress, exit 1 on failure."""
    state_dir = os.path.abspath(state_dir)
    if runner_alive(state_dir) is None:
        raise click.ClickException(f"no mesh running in {state_dir} (start one with `mizzen up`)")
    done: dict[str, Any] | None = None
    try:
        for ev in RunnerClient(StateLayout(state_dir).runner_socket).operation(path, body):
            if ev.get("event") == "progress":
                click.echo(ev.get("message", ""))
            elif ev.get("event") == "done":
                done = ev
    except HttpError as e:
        raise click.ClickException(str(e)) from None
    except Unavailable as e:
        raise click.ClickException(str(e)) from None
    if done is None:
        raise click.ClickException("the runner closed the connection before the operation finished")
    if not done.get("ok"):
        raise click.ClickException(str(done.get("error")))
    return done.get("result")


def _group_state_dir(state_dir: str) -> str:
    """A subcommand's --state-dir, else the one given to its group (`mizzen rollout --state-dir D restart`)."""
    ctx = click.get_current_context()
    src = ctx.get_parameter_source("state_dir")
    parent = (ctx.parent.obj or {}).get("state_dir") if ctx.parent is not None and isinstance(ctx.parent.obj, dict) else None
    if parent and src in (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP):
        return parent
    return state_dir


@click.group()
@state_dir_option
@click.pass_context
def rollout(ctx: click.Context, state_dir: str) -> None:
    """Operations on a workload's replicas."""
    ctx.obj = {"state_dir": state_dir} if ctx.get_parameter_source("state_dir") not in (
        click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP) else {}


@rollout.command("restart")
@click.argument("workload")
@click.option("-n", "--namespace", default=None)
@state_dir_option
def rollout_restart(workload: str, namespace: str | None, state_dir: str) -> None:
    """Replace WORKLOAD's replicas one at a time with zero failed requests: a new pod (sidecar first, then
    the app) becomes ready and registered, then the old one is withdrawn, waited out, and stopped."""
    state_dir = _group_state_dir(state_dir)
    names = run_operation(state_dir, "/rollout/restart", {"workload": workload, "namespace": namespace})
    click.echo(f"workload {workload} restarted: {', '.join(names) or 'no replicas'}")


@click.command()
@click.argument("workload")
@click.option("--replicas", type=click.IntRange(0, 64), required=True)
@click.option("-n", "--namespace", default=None)
@state_dir_option
def scale(workload: str, replicas: int, namespace: str | None, state_dir: str) -> None:
    """Set WORKLOAD's number of replicas (removed ones stop in order: withdraw, wait, app, sidecar)."""
    names = run_operation(state_dir, "/scale", {"workload": workload, "namespace": namespace,
                                                "replicas": replicas})
    click.echo(f"workload {workload}: {len(names)} replica(s): {', '.join(names) or '-'}")


@click.group()
@state_dir_option
@click.pass_context
def proxy(ctx: click.Context, state_dir: str) -> None:
    """Operations on sidecars."""
    ctx.obj = {"state_dir": state_dir} if ctx.get_parameter_source("state_dir") not in (
        click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP) else {}


@proxy.command("upgrade")
@click.argument("workload")
@click.option("--envoy", "envoy", default=None, metavar="PATH", help="the new Envoy binary (default: the same)")
@click.option("-n", "--namespace", default=None)
@state_dir_option
def proxy_upgrade(workload: str, envoy: str | None, namespace: str | None, state_dir: str) -> None:
    """Hot-restart WORKLOAD's Envoys (restart epoch + 1, listen sockets handed over, the old one drains);
    the apps keep running."""
    state_dir = _group_state_dir(state_dir)
    if envoy:
        envoy = os.path.abspath(envoy) if os.sep in envoy else envoy
    out = run_operation(state_dir, "/proxy/upgrade", {"workload": workload, "namespace": namespace,
                                                      "envoy": envoy})
    for r in out or []:
        click.echo(f"{r['pod']}: envoy epoch {r['epoch']} pid {r['envoyPid']}")


__all__ = ["up", "down", "exec_", "status", "find_pod", "wait_ready", "rollout", "scale", "proxy"]
