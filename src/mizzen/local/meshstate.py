"""A mesh's on-disk state, read from outside the runner: status.json, the runner's PID, `mizzen down`."""
from __future__ import annotations

import contextlib
import json
import os
import signal
from typing import Any, Callable

from ..chaos.cleanup import stop_all as stop_chaos_faults
from ..client import StateLayout
from . import netns
from .procs import alive, cmdline, same_process, signal_pid, tail, wait_gone


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def write_private(path: str, text: str) -> None:
    """A secret (a token): mode 0600 from its creation, replaced atomically."""
    tmp = f"{path}.tmp{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def read_pid(state_dir: str) -> int | None:
    try:
        with open(StateLayout(state_dir).runner_pid) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def runner_alive(state_dir: str) -> int | None:
    """The PID of the runner of this state dir if it runs, else None."""
    pid = read_pid(state_dir)
    if pid and alive(pid) and pid != os.getpid():
        if any("mizzen" in a for a in cmdline(pid)):
            return pid
    return None


def envoy_pid_of(agent_state: dict[str, Any] | None) -> int | None:
    if not agent_state:
        return None
    for key in ("envoyPid", "envoy_pid"):
        v = agent_state.get(key)
        if isinstance(v, int):
            return v
    env = agent_state.get("envoy")
    if isinstance(env, dict) and isinstance(env.get("pid"), int):
        return env["pid"]
    return None


def issue_text(issue: dict[str, Any]) -> str:
    where = issue.get("file", "<input>")
    if issue.get("document") is not None:
        where += f" (document {int(issue['document']) + 1})"
    what = ""
    if issue.get("kind"):
        what = f" {issue['kind']}"
        if issue.get("name"):
            what += f" {issue.get('namespace') or 'default'}/{issue['name']}"
    path = f" field {issue['path']}:" if issue.get("path") else ":"
    return f"{where}:{what}{path} {issue.get('message', '')}"


# -------------------------------------------------------------------------- reading a mesh's status

def not_ready_reasons(st: dict[str, Any]) -> list[str]:
    out = []
    if st.get("error"):
        out.append(str(st["error"]))
    for c in st.get("components", []):
        if c["kind"] == "controlplane" and c["state"] != "running":
            out.append(f"control plane {c['state']}")
    comps = {c["name"]: c for c in st.get("components", [])}
    for p in st.get("pods", []):
        if p.get("ready"):
            continue
        agent, app = comps.get(f"{p['name']}/agent"), comps.get(f"{p['name']}/app")
        if agent and agent["state"] != "ready":
            out.append(f"{p['name']}: sidecar {agent['state']}"
                       + (f" ({agent.get('restarts')} restarts)" if agent.get("restarts") else ""))
        elif app and app["state"] != "running":
            out.append(f"{p['name']}: app {app['state']}"
                       + (f" (last exit {app.get('lastExit')}, {app.get('restarts')} restarts)"
                          if app.get("lastExit") is not None else ""))
        elif p.get("ports") and not p.get("registered"):
            out.append(f"{p['name']}: instance {p['namespace']}.{p['name']} not registered")
        else:
            out.append(f"{p['name']}: not ready")
    return out


def summary_lines(st: dict[str, Any]) -> list[str]:
    comps = {c["name"]: c for c in st.get("components", [])}
    cp = comps.get("controlplane") or {}
    lines = [f"mesh {st.get('meshId')} ({st.get('mode')}) in {st.get('stateDir')}: control plane pid "
             f"{cp.get('pid')} on {cp.get('address')}"]
    width = max((len(p["name"]) for p in st.get("pods", [])), default=10)
    for p in st.get("pods", []):
        agent, app = comps.get(f"{p['name']}/agent"), comps.get(f"{p['name']}/app")
        side = f"sidecar {agent['state']}" if agent else "no sidecar"
        ports = ",".join(str(x) for x in p.get("ports") or []) or "-"
        lines.append(f"  {p['name']:<{width}}  {p['ip']:<12} ports {ports:<6} {side:<14} "
                     f"app {app['state'] if app else '-'}{'  registered' if p.get('registered') else ''}")
    return lines


def failing_logs(st: dict[str, Any], lines: int = 15) -> list[tuple[str, str]]:
    """(title, log tail) of what keeps a mesh from being ready."""
    out = []
    comps = {c["name"]: c for c in st.get("components", [])}
    cp = comps.get("controlplane")
    if cp and cp["state"] != "running":
        out.append(("controlplane", tail(cp.get("log", ""), lines)))
    for p in st.get("pods", []):
        if p.get("ready"):
            continue
        agent, app = comps.get(f"{p['name']}/agent"), comps.get(f"{p['name']}/app")
        if agent and agent["state"] != "ready":
            out.append((f"{p['name']} agent ({agent.get('log')})", tail(agent.get("log", ""), lines)))
            envoy = comps.get(f"{p['name']}/envoy")
            if envoy and os.path.exists(envoy.get("log", "")):
                out.append((f"{p['name']} envoy ({envoy.get('log')})", tail(envoy["log"], lines)))
        elif app and app["state"] != "running":
            out.append((f"{p['name']} app ({app.get('log')})", tail(app.get("log", ""), lines)))
        elif agent:
            out.append((f"{p['name']} agent ({agent.get('log')})", tail(agent.get("log", ""), lines)))
    return out


def live_status(state_dir: str) -> dict[str, Any] | None:
    """status.json with every PID's liveness re-checked now."""
    st = read_json(StateLayout(state_dir).status_file)
    if st is None:
        return None
    rpid = (st.get("runner") or {}).get("pid")
    runner_up = bool(rpid and alive(rpid))
    st["runner"] = {"pid": rpid, "alive": runner_up}
    for c in st.get("components", []):
        pid = c.get("pid")
        c["alive"] = bool(pid and alive(pid))
        if pid and not c["alive"] and c.get("state") in ("running", "ready", "starting", "draining"):
            c["state"] = "dead"
    if not runner_up and st.get("phase") in ("starting", "running", "stopping"):
        st["phase"] = "dead"
        st["ready"] = False
    return st


# ------------------------------------------------------------------------------------------- down

def stop_mesh(state_dir: str, timeout: float = 60.0, out: Callable[[str], None] = lambda s: None) -> list[str]:
    """SIGTERM the runner and wait; if it is dead or too slow, kill what status.json recorded and remove
    the mesh's namespaces. Returns what had to be cleaned up by force (empty when the runner did it all)."""
    layout = StateLayout(state_dir)
    state_dir = layout.root
    meshid = netns.mesh_id(state_dir)
    forced: list[str] = []
    pid = runner_alive(state_dir)
    if pid:
        out(f"stopping mesh {meshid} (runner pid {pid})")
        signal_pid(pid, signal.SIGTERM)
        if wait_gone([pid], timeout):
            out(f"runner did not stop in {timeout:.0f}s; killing it")
            signal_pid(pid, signal.SIGKILL)
            wait_gone([pid], 5)
            forced.append(f"runner {pid}")
    st = read_json(layout.status_file) or {}
    # faults of `mizzen chaos` a dead runner did not undo (a frozen control plane, a relay, rules)
    forced += stop_chaos_faults(state_dir, reason="down")
    # whatever the runner left: recorded processes (if still the same programs) ...
    comps = st.get("components") or []
    for kind in ("host-runner", "app", "agent", "envoy", "ratelimit", "controlplane", "redis", "etcd"):
        for c in comps:
            if c.get("kind") != kind:
                continue
            cpid = c.get("pid")
            argv = c.get("cmdline")
            if kind in ("envoy", "etcd"):
                ok = alive(cpid) and any(kind in a for a in cmdline(cpid))
            else:
                ok = same_process(cpid, argv) if argv else False
            if ok:
                signal_pid(cpid, signal.SIGKILL, group=kind == "app")
                signal_pid(cpid, signal.SIGKILL)
                forced.append(f"{c['name']} pid {cpid}")
    # ... and namespaces (a multi-host mesh's host runners have namespaces of their own)
    if netns.unavailable_reason() is None:
        forced += netns.cleanup_mesh(meshid)
        for name in layout.host_names():
            forced += netns.cleanup_mesh(netns.mesh_id(layout.host(name).root))
    try:
        rp = read_pid(state_dir)
        if rp and not alive(rp):
            os.unlink(layout.runner_pid)
    except OSError:
        pass
    if forced and st:
        st["phase"] = "stopped"
        st["ready"] = False
        try:
            write_json(layout.status_file, st)
        except OSError:
            pass
    return forced
