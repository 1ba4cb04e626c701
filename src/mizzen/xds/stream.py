"""The xDS stream protocol as a sans-I/O state machine, one per connected proxy.

    s = SotwStream()                      # or DeltaStream()
    out = s.on_request(discovery_request, now)    # -> [Response]: bytes to write + a description
    out = s.set_target(resources, now)            # the full desired set {type_url: {name: Rendered}}
    s.status()                                    # {"CDS": {"state", "sentVersion", "ackedVersion", "error"}, ...}

Nothing here does I/O or reads a clock: the caller feeds requests and targets, writes `Response.data` to the
wire (a serialized DiscoveryResponse / DeltaDiscoveryResponse), and passes the time in.

Protocol rules implemented
- Nothing is sent before the first target is set.
- Per type: subscription (wildcard for CDS/LDS when the first request names nothing, or "*"; named otherwise;
  Delta subscribe/unsubscribe), the nonce of the last response, sent/acked version, the last NACK's message
  (kept until a later ACK).  At most one response per type is in flight: the next is sent after the ACK/NACK.
- SotW: version_info is a hash of the (name, version) pairs sent; EDS/RDS send only the requested names.
  SotW cannot delete a named resource, so a subscribed name that leaves the target keeps the client's copy
  until the client unsubscribes it.
  A request carrying a stale nonce (not the last one sent for its type) is ignored.  On a new stream, a first
  request whose version_info equals the hash of what we would send is taken as "already has it".
- Delta: only new/changed resources are sent, removals go in removed_resources; `initial_resource_versions`
  on a new stream seed what the client has, so unchanged resources are not resent.

Make-before-break (per stream; `phase`):
  CLUSTERS  clusters: installed ∪ target (changed/new ones sent, none removed); endpoints: target for the
            subscribed names, installed ones kept; listeners/routes: unchanged (as installed).
  LISTENERS clusters/endpoints as above; listeners and routes: target.
  REMOVE    everything: target (SotW: CDS = target set; Delta: removed_resources).
  DONE      idle: everything is target; endpoint changes and new subscriptions are answered at once.
A phase ends when none of its types has a response in flight and none has anything left to send (a NACK
also ends it: the error is recorded and the sequence continues).  `set_target` and a type subscribed for the
first time restart from CLUSTERS; whatever was installed is kept until REMOVE.  Types with nothing to change
are skipped.  Endpoint-only changes are sent in every phase.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

from mizzen.model.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SHORT_TYPE, ProxyResources, Rendered
from mizzen.xds import shared, wire
from mizzen.xds.shared import Own, is_shared

__all__ = [
    "Response", "SotwStream", "DeltaStream", "new_stream", "version_of", "WILDCARD_TYPES",
    "CLUSTERS", "LISTENERS", "REMOVE", "DONE", "PHASE_NAMES",
]

WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
SEND_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
STATUS_TYPES = (CLUSTER, ENDPOINT, LISTENER, ROUTE)

CLUSTERS, LISTENERS, REMOVE, DONE = 1, 2, 3, 4
PHASE_NAMES = {CLUSTERS: "CLUSTERS", LISTENERS: "LISTENERS", REMOVE: "REMOVE", DONE: "DONE"}
# Which types must be quiet for a phase to end.
_PHASE_TYPES = {CLUSTERS: (CLUSTER, ENDPOINT), LISTENERS: SEND_ORDER, REMOVE: None}

# View modes: what a type should look like to the client in the current phase.
_KEEP = "keep"  # installed ∪ target
_HAVE = "have"  # installed (unchanged)
_TARGET = "target"

_EMPTY: Mapping[str, Rendered] = {}


def version_of(view: Mapping[str, Rendered]) -> str:
    """A stable version for a set of resources: hash of the sorted (name, version) pairs."""
    if is_shared(view):
        return shared.version(view)
    text = "".join([f"{name}\x00{view[name].version}\n" for name in sorted(view)])
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _short(type_url: str) -> str:
    return SHORT_TYPE.get(type_url) or type_url.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Response:
    """One response to write: `data` is the serialized (Delta)DiscoveryResponse."""

    type_url: str
    nonce: str
    version: str  # SotW version_info / Delta system_version_info
    resources: tuple[str, ...]  # names of the resources included
    removed: tuple[str, ...] = ()
    data: bytes = b""
    delta: bool = False

    @property
    def short(self) -> str:
        return _short(self.type_url)

    def __str__(self) -> str:
        s = f"{self.short} nonce={self.nonce} version={self.version} +{list(self.resources)}"
        return s + (f" -{list(self.removed)}" if self.removed else "")


class _TypeState:
    """Per type: subscription, what the client has been sent, in-flight nonce, ACK/NACK record."""

    __slots__ = (
        "type_url", "subscribed", "wildcard", "names", "have", "ever_sent", "force", "reported_version",
        "last_nonce", "inflight", "inflight_version", "sent_version", "acked_version", "error", "nacks",
        "sent_at", "acked_at", "gen", "memo", "sub_gen", "pick_memo", "part_memo", "covered", "seed",
    )

    def __init__(self, type_url: str) -> None:
        self.type_url = type_url
        self.subscribed = False
        self.wildcard = False
        self.names: frozenset[str] = frozenset()  # interned: streams subscribed alike hold one set
        # What the client has (as far as we know): SotW = the last set sent; Delta = sent + initial versions
        # (entries seeded from initial_resource_versions are placeholders with an empty payload).
        # Shared (never mutated: a target map, or one from `xds.shared`) unless it is an `Own`.
        self.have: Mapping[str, Rendered] = _EMPTY
        self.ever_sent = False
        self.force = False  # resend even if unchanged (client restarted the type on this stream)
        self.reported_version = ""  # SotW: version_info of the first request of a new stream
        self.last_nonce = ""
        self.inflight: str | None = None
        self.inflight_version = ""
        self.sent_version = ""
        self.acked_version = ""
        self.error: str | None = None
        self.nacks = 0
        self.sent_at: float | None = None
        self.acked_at: float | None = None
        self.gen = 0  # bumped on every change of have/subscription, for the "nothing to send" memo
        self.memo: dict[str, tuple[Any, int]] = {}  # view mode -> (target mapping, gen) found clean
        self.sub_gen = 0  # bumped on every change of the subscription (wildcard, names)
        self.pick_memo: tuple[Any, int, Mapping[str, Rendered]] | None = None
        self.part_memo: tuple[Any, int, Mapping[str, Rendered]] | None = None
        self.covered: tuple[Any, int] | None = None  # (a shared map all of whose names are subscribed, sub_gen)
        # Delta: the initial_resource_versions of the stream's first request for this type, not yet merged into
        # `have` (`DeltaStream._settle_seed`: against the target, when there is one)
        self.seed: Mapping[str, str] | None = None

    def interested(self, name: str) -> bool:
        return self.wildcard or name in self.names

    def own_have(self) -> Own:
        """`have`, made private first if it is shared (copy on write)."""
        if is_shared(self.have):
            self.have = Own(self.have)
        return self.have  # type: ignore[return-value]

    def covers(self, m: Mapping[str, Rendered]) -> bool:
        """Is every name of `m` subscribed?  For a shared map, only the names it adds to the last map found
        covered are looked at (a new target differs from the previous one in a few names)."""
        if self.wildcard:
            return True
        c = self.covered
        if c is not None and c[1] == self.sub_gen and is_shared(m):
            if c[0] is m:
                return True
            ok = shared.added_keys(c[0], m) <= self.names
        else:
            ok = m.keys() <= self.names
        if ok and is_shared(m):
            self.covered = (m, self.sub_gen)
        return ok

    def pick(self, src: Mapping[str, Rendered]) -> Mapping[str, Rendered]:
        """The part of `src` this type is subscribed to: `src` itself (shared) when that is all of it."""
        if self.wildcard:
            return src
        m = self.pick_memo
        if m is not None and m[0] is src and m[1] == self.sub_gen:
            return m[2]
        if self.covers(src):
            if is_shared(src):
                self.pick_memo = (src, self.sub_gen, src)
            return src
        return Own({n: src[n] for n in src.keys() & self.names})  # fresh: it may become `have` and be mutated

    def interested_part(self, d: Mapping[str, Rendered]) -> Mapping[str, Rendered]:
        if self.wildcard:
            return d
        m = self.part_memo
        if m is not None and m[0] is d and m[1] == self.sub_gen:
            return m[2]
        if self.covers(d):
            if is_shared(d):
                self.part_memo = (d, self.sub_gen, d)
            return d
        return Own({n: d[n] for n in d.keys() & self.names})  # fresh: it may become `have` and be mutated


def _changed(view: Mapping[str, Rendered], have: Mapping[str, Rendered]) -> list[Rendered]:
    """Entries of `view` that `have` lacks or has at another version (identity first: shared objects)."""
    if view is have:
        return []
    if is_shared(view) and is_shared(have):
        return list(shared.delta(view, have)[0])
    get = have.get
    return [r for r in [r for n, r in view.items() if get(n) is not r]
            if (h := get(r.name)) is None or h.version != r.version]


def _same(a: Mapping[str, Rendered], b: Mapping[str, Rendered]) -> bool:
    if a is b:
        return True
    if is_shared(a) and is_shared(b):
        return shared.same(a, b)
    return len(a) == len(b) and a.keys() == b.keys() and not _changed(a, b)


class _Stream:
    mode = ""

    def __init__(self) -> None:
        self.types: dict[str, _TypeState] = {}
        self.target: ProxyResources | None = None
        self.phase = DONE
        self.node: Any = None  # the node of the first request that carried one
        self._nonce = 0
        self.target_set_at: float | None = None

    # -- public -------------------------------------------------------------------------------------------
    @property
    def phase_name(self) -> str:
        return PHASE_NAMES[self.phase]

    def set_target(self, resources: ProxyResources, now: float) -> list[Response]:
        """Replace the full desired resource set; returns what to send now (make-before-break)."""
        self.target = resources
        self.target_set_at = now
        self.phase = CLUSTERS
        return self._advance(now)

    def on_request(self, req: Any, now: float) -> list[Response]:
        raise NotImplementedError

    def status(self) -> dict[str, dict[str, Any]]:
        """Per short type: state SYNCED | STALE | NACKED | NOT_SENT, sentVersion, ackedVersion, error."""
        out: dict[str, dict[str, Any]] = {}
        types = list(STATUS_TYPES) + [t for t in self.types if t not in STATUS_TYPES]
        for t in types:
            st = self.types.get(t)
            if st is not None and st.seed is not None:
                self._settle_seed(st)
            if st is None or not st.ever_sent:
                state = "NOT_SENT"
            elif st.inflight is not None:
                state = "STALE"
            elif st.error is not None:
                state = "NACKED"
            elif self.target is not None and not _same(self._view(st, _TARGET), st.have):
                state = "STALE"
            else:
                state = "SYNCED"
            out[_short(t)] = {
                "state": state,
                "sentVersion": st.sent_version if st else "",
                "ackedVersion": st.acked_version if st else "",
                "error": st.error if st else None,
                "resources": len(st.have) if st else 0,
                "subscribed": (["*"] if st.wildcard else []) + sorted(st.names) if st else [],
                "nacks": st.nacks if st else 0,
            }
        return out

    def sent(self, type_url: str) -> dict[str, Rendered]:
        """What the client was last sent (Delta: including versions it reported, as payload-less entries)."""
        st = self.types.get(type_url)
        if st is not None and st.seed is not None:
            self._settle_seed(st)
        return dict(st.have) if st else {}

    def synced(self) -> bool:
        """True when every subscribed type has its target acknowledged and the sequence is idle."""
        if self.target is None or self.phase != DONE:
            return False
        return all(s["state"] in ("SYNCED", "NOT_SENT") for s in self.status().values())

    # -- shared machinery -----------------------------------------------------------------------------------
    def _ts(self, type_url: str) -> _TypeState:
        st = self.types.get(type_url)
        if st is None:
            st = self.types[type_url] = _TypeState(type_url)
        return st

    def _settle_seed(self, st: _TypeState) -> None:
        """Only Delta streams have seeds."""
        st.seed = None

    def _subscribe_first(self, st: _TypeState) -> None:
        st.subscribed = True
        if self.target is not None:
            self.phase = CLUSTERS  # a newly subscribed type goes through make-before-break too

    def _refresh_endpoints_of_updated_clusters(self, before: Mapping[str, Rendered],
                                               after: Mapping[str, Rendered]) -> None:
        """An updated (same name, new content) EDS cluster is re-created by Envoy and warms until it gets its
        ClusterLoadAssignment again, even an unchanged one; its re-request looks like an ACK. So the CLAs of
        updated clusters are sent again right after the CDS response (as Istio does), instead of Envoy
        waiting out its initial fetch timeout."""
        ep = self.types.get(ENDPOINT)
        if ep is None or not ep.subscribed:
            return
        if ep.seed is not None:
            self._settle_seed(ep)
        if is_shared(before) and is_shared(after):
            updated = shared.updated_names(before, after)
        else:
            updated = tuple(n for n, r in after.items() if n in before and before[n].version != r.version)
        if not updated:
            return
        if self.mode == "sotw":
            ep.force = True
        elif is_shared(ep.have):
            ep.have = shared.without(ep.have, updated)
        else:
            for n in updated:
                ep.have.pop(n, None)  # type: ignore[attr-defined]
        ep.gen += 1

    def _next_nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)

    def _mode(self, t: str) -> str:
        p = self.phase
        if t == CLUSTER or t == ENDPOINT:
            return _KEEP if p <= LISTENERS else _TARGET
        if t == LISTENER or t == ROUTE:
            return _HAVE if p == CLUSTERS else _TARGET
        return _TARGET

    def _view(self, st: _TypeState, mode: str) -> Mapping[str, Rendered]:
        """What the client should have of this type in `mode` (a shared map whenever its parts are)."""
        if mode == _HAVE:
            return st.interested_part(st.have)
        picked = st.pick((self.target or _EMPTY).get(st.type_url) or _EMPTY)
        if mode == _KEEP and st.have:
            part = st.interested_part(st.have)
            if is_shared(part) and is_shared(picked):
                return shared.merge(part, picked)
            view = Own(part)
            view.update(picked)
            return view
        return picked

    def _on_ack(self, st: _TypeState, nonce: str, error: str | None, now: float) -> None:
        if st.inflight is None or nonce != st.inflight:
            return
        st.inflight = None
        if error is not None:
            st.error = error or "rejected (no message)"
            st.nacks += 1
        else:
            st.error = None
            st.acked_version = st.inflight_version
            st.acked_at = now

    def _advance(self, now: float) -> list[Response]:
        if self.target is None:
            return []
        out: list[Response] = []
        while True:
            order = list(SEND_ORDER) + [t for t in self.types if t not in SEND_ORDER]
            for t in order:
                st = self.types.get(t)
                if st is None or not st.subscribed or st.inflight is not None:
                    continue
                r = self._maybe_send(st, now)
                if r is not None:
                    out.append(r)
            if self.phase == DONE:
                return out
            check = _PHASE_TYPES[self.phase] or tuple(self.types)
            if any((st := self.types.get(t)) is not None and st.inflight is not None for t in check):
                return out
            self.phase += 1

    def _maybe_send(self, st: _TypeState, now: float) -> Response | None:
        mode = self._mode(st.type_url)
        tgt = (self.target or _EMPTY).get(st.type_url)
        m = st.memo.get(mode)
        if m is not None and m[0] is tgt and m[1] == st.gen:
            return None  # nothing changed since we last found nothing to send in this mode
        r = self._send_if_needed(st, mode, now)
        st.memo[mode] = (tgt, st.gen)  # after a send, `have` is this mode's view: clean as well
        return r

    def _send_if_needed(self, st: _TypeState, mode: str, now: float) -> Response | None:
        raise NotImplementedError

    def _shared_response(self, st: _TypeState, key: tuple, keep: tuple, build) -> Response | None:
        """The memoized Response for `key` (built once with a shared nonce), or None when this stream sent that
        very nonce last (then it must build its own)."""
        r = shared.memoized(key, keep, build)
        return None if r.nonce == st.last_nonce else r

    def _record_send(self, st: _TypeState, view: Mapping[str, Rendered], version: str, nonce: str,
                     now: float) -> None:
        if st.type_url == CLUSTER:
            self._refresh_endpoints_of_updated_clusters(st.have, view)
        st.have = view
        st.ever_sent = True
        st.force = False
        st.sent_version = version
        st.last_nonce = nonce
        st.inflight = nonce
        st.inflight_version = version
        st.sent_at = now
        st.gen += 1


class SotwStream(_Stream):
    """State-of-the-world ADS (StreamAggregatedResources)."""

    mode = "sotw"

    def on_request(self, req: Any, now: float) -> list[Response]:
        if self.node is None and req.HasField("node"):
            self.node = req.node
        st = self._ts(req.type_url)
        nonce = req.response_nonce if st.subscribed else ""  # a nonce from an earlier stream means nothing here
        if nonce and nonce != st.last_nonce:
            return []  # stale: answers a response that a later one superseded
        if not nonce:
            if st.subscribed and st.ever_sent:
                st.force = True  # the client restarted this type: send again
                st.inflight = None
            st.reported_version = req.version_info
            st.gen += 1
        names = set(req.resource_names)
        wildcard = "*" in names or (not names and req.type_url in WILDCARD_TYPES)
        names.discard("*")
        if wildcard != st.wildcard or names != st.names:
            st.wildcard, st.names = wildcard, shared.intern_names(names)
            st.gen += 1
            st.sub_gen += 1
        if nonce:
            self._on_ack(st, nonce, req.error_detail.message if req.HasField("error_detail") else None, now)
        if not st.subscribed:
            self._subscribe_first(st)
        return self._advance(now)

    def _view(self, st: _TypeState, mode: str) -> dict[str, Rendered]:
        # SotW cannot remove a named (non-wildcard) resource: absence from a response leaves the client's
        # copy alone.  So a subscribed name missing from the target keeps what was sent, and no response
        # is sent just because a name disappeared (the client unsubscribes it, e.g. after a cluster removal).
        if mode == _TARGET and not st.wildcard:
            mode = _KEEP
        return super()._view(st, mode)

    def _send_if_needed(self, st: _TypeState, mode: str, now: float) -> Response | None:
        if st.reported_version and not st.ever_sent:
            tv = self._view(st, _TARGET)
            if version_of(tv) == st.reported_version:  # a reconnecting client already has exactly this
                st.have, st.ever_sent = tv, True
                st.sent_version = st.acked_version = st.reported_version
                st.gen += 1
            st.reported_version = ""
        view = self._view(st, mode)
        if _same(view, st.have) and not st.force:
            initial = not st.ever_sent and st.wildcard and mode != _HAVE
            if not initial:
                return None
        version = version_of(view)
        r = None
        if is_shared(view):  # same type and version: the same bytes for every stream (one shared nonce)
            r = self._shared_response(st, ("sotw", st.type_url, version), (),
                                      lambda: self._sotw_response(st.type_url, version, view, shared.next_nonce()))
        if r is None:
            r = self._sotw_response(st.type_url, version, view, self._next_nonce())
        self._record_send(st, view, version, r.nonce, now)
        return r

    @staticmethod
    def _sotw_response(type_url: str, version: str, view: Mapping[str, Rendered], nonce: str) -> Response:
        names = tuple(sorted(view))
        data = wire.sotw_response(type_url, version, (view[n] for n in names), nonce)
        return Response(type_url, nonce, version, names, (), data, False)


class DeltaStream(_Stream):
    """Incremental ADS (DeltaAggregatedResources)."""

    mode = "delta"

    def on_request(self, req: Any, now: float) -> list[Response]:
        if self.node is None and req.HasField("node"):
            self.node = req.node
        st = self._ts(req.type_url)
        first = not st.subscribed
        if st.seed is not None:  # against the subscription it was sent with
            self._settle_seed(st)
        changed = False
        subscribe = list(req.resource_names_subscribe)
        if first and not subscribe and req.type_url in WILDCARD_TYPES:
            st.wildcard = changed = True  # legacy wildcard: the first request names nothing
        if subscribe:  # set operations: a first EDS request of an Envoy names every cluster
            sub = set(subscribe)
            if "*" in sub:
                sub.discard("*")
                changed |= not st.wildcard
                st.wildcard = True
            new = sub - st.names
            if new:
                st.names = shared.intern_names(st.names | new)
                changed = True
        unsub = req.resource_names_unsubscribe
        if unsub:
            drop = set(unsub)
            if "*" in drop:
                drop.discard("*")
                changed |= st.wildcard
                st.wildcard = False
            drop &= st.names
            if drop:
                st.names = shared.intern_names(st.names - drop)
                changed = True
        if changed:
            st.sub_gen += 1
            gone = [] if st.wildcard else list(st.have.keys() - st.names)
            if gone:
                have = st.own_have()
                for n in gone:
                    del have[n]  # the client forgets what it unsubscribed from
        if first:
            initial = req.initial_resource_versions
            if initial:
                # kept as given; merged into `have` when the target is known (`_settle_seed`): a reconnecting
                # client that holds exactly the current view then costs one comparison, not a private map
                st.seed = initial  # read-only (the request's map): copying it cost more than comparing it
            changed = True
        if changed:
            st.gen += 1
        if req.response_nonce:
            self._on_ack(st, req.response_nonce,
                         req.error_detail.message if req.HasField("error_detail") else None, now)
        if first:
            self._subscribe_first(st)
        return self._advance(now)

    def _settle_seed(self, st: _TypeState) -> None:
        """Merge the client's initial_resource_versions into `have`. When they name only resources of the subscribed
        part of the target (a client back after a control-plane restart), `have` is that shared map -- itself when
        every version matches (nothing is resent), else one derived from it that every stream reporting the same
        versions shares (`shared.seeded`: one delta, one response for all of them). Otherwise (it holds names the
        target lacks) each name held at the target's version gets the target's entry, the others a payload-less
        placeholder, in a private map."""
        seed, st.seed = st.seed, None
        if not seed:
            return
        interested = st.interested
        tgt = st.pick(self.target.get(st.type_url) or _EMPTY) if self.target is not None else _EMPTY
        if not st.have and is_shared(tgt):
            get = seed.get
            stale: list[tuple[str, str]] = []
            lacking: list[str] = []
            for n, r in tgt.items():
                v = get(n)
                if v != r.version:
                    if v is None:
                        lacking.append(n)
                    else:
                        stale.append((n, v))
            if len(seed) == len(tgt) - len(lacking):  # no name outside the target: a map derived from it
                st.have = shared.seeded(tgt, st.type_url, tuple(stale), tuple(lacking))
                st.gen += 1
                return
        have = st.own_have()
        tget = tgt.get
        t = st.type_url
        for n, v in seed.items():
            if interested(n):
                r = tget(n)
                have[n] = r if r is not None and r.version == v else Rendered(t, n, v, b"")
        st.gen += 1

    def _send_if_needed(self, st: _TypeState, mode: str, now: float) -> Response | None:
        if st.seed is not None:
            self._settle_seed(st)
        view = self._view(st, mode)
        have = st.have
        if is_shared(view) and is_shared(have):
            return self._send_shared(st, mode, view, have, now)
        updates = _changed(view, have)
        removed = list(have.keys() - view.keys())
        if not updates and not removed:
            initial = not st.ever_sent and not have and st.wildcard and mode != _HAVE
            if not initial:
                if not st.ever_sent and have:
                    st.ever_sent = True  # seeded by initial_resource_versions and already current
                    st.sent_version = st.acked_version = version_of(view)
                elif is_shared(view):
                    st.have = view  # the same content: hold the shared map again, not a private copy
                return None
        updates.sort(key=lambda r: r.name)
        removed.sort()
        version = version_of(view)
        nonce = self._next_nonce()
        data = wire.delta_response(st.type_url, version, updates, removed, nonce)
        self._record_send(st, view, version, nonce, now)
        return Response(st.type_url, nonce, version, tuple(r.name for r in updates), tuple(removed), data, True)

    def _send_shared(self, st: _TypeState, mode: str, view: Mapping[str, Rendered], have: Mapping[str, Rendered],
                     now: float) -> Response | None:
        """`_send_if_needed` when both maps are shared: the delta, version and response bytes are computed once
        for every stream going from `have` to `view`."""
        updates, removed = shared.delta(view, have)
        if not updates and not removed:
            initial = not st.ever_sent and not have and st.wildcard and mode != _HAVE
            if not initial:
                if not st.ever_sent and have:
                    st.ever_sent = True
                    st.sent_version = st.acked_version = version_of(view)
                return None
        version = version_of(view)
        t = st.type_url

        def build(nonce: str) -> Response:
            data = wire.delta_response(t, version, updates, removed, nonce)
            return Response(t, nonce, version, tuple(r.name for r in updates), removed, data, True)

        r = self._shared_response(st, ("delta", t, id(view), id(have)), (view, have),
                                  lambda: build(shared.next_nonce()))
        if r is None:
            r = build(self._next_nonce())
        self._record_send(st, view, version, r.nonce, now)
        return r


def new_stream(mode: str) -> _Stream:
    """`mode` is "sotw" or "delta"."""
    if mode == "sotw":
        return SotwStream()
    if mode == "delta":
        return DeltaStream()
    raise ValueError(f"unknown xDS mode {mode!r}")
