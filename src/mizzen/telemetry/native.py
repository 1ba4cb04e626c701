"""Envoy-native request metrics -> Istio's series, at scrape time. PURE (text and values in, values out).

With the `envoy-stats` metrics provider each HCM counts its requests into Envoy's own stats
(`envoy.native_metrics_log`): a counter and three histograms whose tags are the label-relevant fields of the
request (direction, peer host, upstream cluster, response code, response flags and, on a sidecar's outbound
side, the :authority, packed into one `key` tag; the peer certificate SANs and the gRPC status a tag each:
telemetry/envoy._native_tags). In Envoy's /stats/prometheus they read

    envoy_mizzen_requests_total{key="outbound\x1f<host>\x1f<cluster>\x1f<code>\x1f<flags>[\x1f<authority>]",
        peer="..",grpc=".."} N
    envoy_mizzen_request_duration_milliseconds_bucket{...,le=".."} / _sum / _count    (and request/response bytes)

(an Envoy configured by an earlier Mizzen has a tag per value instead of `key`; still read).

`split_envoy_text` takes these series out of Envoy's text; `Converter.convert` names each one as the access-log
path names an equivalent record (`record_of` + `aggregate.http_labels`, with the directory of the moment) and
adds up the series that get the same Istio labels; `aggregate.sum_http` adds them to the aggregator's own.

The values are Envoy's cumulative counts, relabelled at every scrape. So that Istio's counters only grow:
    * a series whose peer the directory named keeps those labels while Envoy keeps it (a pod that left the
      directory does not move its past requests to `unknown`);
    * a new series whose peer address is unknown may be left out until the directory refresh it wakes
      (`hold`: the caller's policy), so that a peer registered moments ago is not shown as `unknown`; a series
      already shown is never left out again;
    * the series cap admits label sets in a stable order: a label set shown once stays while its Envoy series do.

What the native tags cannot say, compared with an access-log entry: the :authority of a request on the callee's
side (a caller would choose the tag's values there; the destination side names the service of the inbound port,
an HTTP one first when a `tcp-` service shares it), and the content-type (a gRPC request is `grpc` only when a
grpc-status came back). The caller's side has the :authority, so a passthrough call is named by its Host, as Istio.
"""
from __future__ import annotations

import re
from typing import Callable, Container, Mapping, NamedTuple

from . import istio
from .envoy import NATIVE_KEY_TAG, NATIVE_PACKED, NATIVE_SEP
from .aggregate import Histogram, HttpSeries, SelfInfo, http_labels, unknown_peer_address, window_key
from .peers import Directory
from .records import INBOUND, OUTBOUND, RequestRecord, _spiffe

PREFIX = "envoy_mizzen_"
# Envoy's admin filters /stats/prometheus on its own stat names (`mizzen.requests_total...`, the stats access
# logger's stat_prefix: telemetry/envoy.NATIVE_PREFIX), not on the Prometheus names; the query value is encoded
STATS_PATH = "/stats/prometheus?filter=%5Emizzen%5C."  # filter=^mizzen\.
COUNTER = "envoy_mizzen_requests_total"
# histogram family -> (HttpSeries attribute, Istio's bucket bounds)
HISTOGRAMS = {
    "envoy_mizzen_request_duration_milliseconds": ("duration", istio.DURATION_BUCKETS_MS),
    "envoy_mizzen_request_bytes": ("request_bytes", istio.BYTES_BUCKETS),
    "envoy_mizzen_response_bytes": ("response_bytes", istio.BYTES_BUCKETS),
}
TAGS = ("direction", "peer", "host", "cluster", "code", "grpc", "flags", "authority")  # authority: outbound only
_PACKED_AT = tuple(TAGS.index(f) for f in NATIVE_PACKED)
_KEY_FIELDS = len(NATIVE_PACKED) - 1  # the fields before the optional authority, which may contain the separator
# sample name -> (histogram family or None for the counter, part)
_SAMPLES: dict[str, tuple[str | None, str]] = {COUNTER: (None, "")}
for _fam in HISTOGRAMS:
    _SAMPLES.update({f"{_fam}_{part}": (_fam, part) for part in ("bucket", "sum", "count")})
_TYPE_LINES = {f"# {kind} {name}" for name in (COUNTER, *HISTOGRAMS) for kind in ("TYPE", "HELP")}
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_INF = float("inf")

EnvoyKey = tuple  # tag values in TAGS order
IstioKey = tuple  # label values in istio.HTTP_LABELS order


def _unescape(v: str) -> str:
    if "\\" not in v:
        return v
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def _tags(body: str) -> dict[str, str]:
    return {m.group(1): _unescape(m.group(2)) for m in _LABEL.finditer(body)}


def _key(tags: dict[str, str]) -> EnvoyKey | None:
    """The tag values in TAGS order, from Envoy's tags: the packed `key` tag (telemetry/envoy._native_tags: the
    fields Mizzen controls, then the :authority last, which alone may contain the separator) and a tag each for
    the others; or, from an Envoy still configured by an earlier Mizzen, a tag per value. None: a `key` with too
    few fields (not one we configured)."""
    packed = tags.get(NATIVE_KEY_TAG)
    if packed is None:
        return tuple(tags.get(t, "") for t in TAGS)
    fields = packed.split(NATIVE_SEP, _KEY_FIELDS)
    if len(fields) < _KEY_FIELDS:
        return None
    out = [tags.get(t, "") for t in TAGS]
    for i, v in zip(_PACKED_AT, fields):
        out[i] = v
    return tuple(out)


def _lines(text: str):
    """Envoy's lines, split at "\\n" only: a tag value (an :authority) may hold other characters that
    str.splitlines() would take for line ends (\\v, \\f, \\x1c-\\x1e, \\x85, ...)."""
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


class _Hist:
    __slots__ = ("cum", "sum", "count")

    def __init__(self) -> None:
        self.cum: dict[float, float] = {}
        self.sum = 0.0
        self.count: float | None = None


def _histogram(bounds: tuple[float, ...], h: _Hist) -> Histogram:
    """Envoy's cumulative buckets -> per-bucket counts on `bounds`. When Envoy's bounds are Istio's (the bootstrap
    sets them) this is exact; for a bound Envoy lacks, the cumulative count of its largest bound below is taken."""
    out = Histogram(len(bounds))
    les = sorted(b for b in h.cum if b != _INF)
    total = h.cum.get(_INF, h.count if h.count is not None else (h.cum[les[-1]] if les else 0))
    j, cum, prev = 0, 0.0, 0.0
    for i, b in enumerate(bounds):
        while j < len(les) and les[j] <= b:
            cum = h.cum[les[j]]
            j += 1
        c = min(cum, total)
        out.counts[i] = int(max(c - prev, 0))
        prev = max(prev, c)
    out.counts[-1] = int(max(total - prev, 0))
    out.sum = h.sum
    out.count = int(h.count if h.count is not None else total)
    return out


def split_envoy_text(text: str) -> tuple[str, dict[EnvoyKey, HttpSeries]]:
    """(Envoy's text without the `envoy_mizzen_*` request families, those series by tag values). The text is
    returned unchanged (the same object) when it has none of them."""
    if PREFIX not in text:
        return text, {}
    keep: list[str] = []
    counters: dict[EnvoyKey, float] = {}
    hists: dict[tuple[str, EnvoyKey], _Hist] = {}
    keys: dict[str, EnvoyKey] = {}  # label text (without le) -> tag values
    for line in _lines(text):
        if not line.startswith(PREFIX):
            if not (line.startswith("# ") and " ".join(line.split()[:3]) in _TYPE_LINES):
                keep.append(line)
            continue
        brace = line.find("{")
        name = line[:brace] if brace >= 0 else line.split(None, 1)[0]
        what = _SAMPLES.get(name)
        if what is None:  # some other envoy_mizzen_* stat: not ours to rename
            keep.append(line)
            continue
        if brace >= 0:
            close = line.rfind("}")
            body, rest = line[brace + 1:close], line[close + 1:]
        else:
            body, rest = "", line[len(name):]
        try:
            value = float(rest.split()[0])
        except (IndexError, ValueError):
            continue  # not a sample line we can read: dropped with its family
        le = key = None
        if what[1] == "bucket":
            i = body.rfind(',le="')  # Envoy puts le last
            if i >= 0 and body.endswith('"') and '"' not in body[i + 5:-1]:
                le, body = body[i + 5:-1], body[:i]
            else:
                tags = _tags(body)
                le = tags.pop("le", None)
                key = _key(tags)
                if key is None:
                    continue
            if le is None:
                continue
        if key is None:
            if body in keys:
                key = keys[body]
            else:
                key = keys[body] = _key(_tags(body))
            if key is None:
                continue
        fam, part = what
        if fam is None:
            counters[key] = counters.get(key, 0.0) + value
            continue
        h = hists.get((fam, key))
        if h is None:
            h = hists[(fam, key)] = _Hist()
        if part == "bucket":
            try:
                h.cum[float(le)] = value  # "+Inf" parses as inf
            except ValueError:
                pass
        elif part == "sum":
            h.sum = value
        else:
            h.count = value
    series: dict[EnvoyKey, HttpSeries] = {}
    for key, v in counters.items():
        s = series[key] = HttpSeries()
        s.requests = int(v)
    for (fam, key), h in hists.items():
        s = series.get(key)
        if s is None:
            s = series[key] = HttpSeries()
        attr, bounds = HISTOGRAMS[fam]
        setattr(s, attr, _histogram(bounds, h))
    return "".join(keep), series


def _value(v: str) -> str:
    return "" if v == "-" else v


def record_of(key: EnvoyKey, me: SelfInfo) -> RequestRecord:
    """The RequestRecord an access-log entry with these values would give (no path, timing, sizes)."""
    direction, peer, host, cluster, code, grpc, flags, authority = key
    direction = INBOUND if direction == INBOUND else OUTBOUND
    peer = _spiffe(_value(peer))
    host, grpc = _value(host), _value(grpc)
    return RequestRecord(
        direction=direction, downstream_ip=host if direction == INBOUND else "",
        upstream_host=host if direction == OUTBOUND else "", upstream_cluster=_value(cluster),
        authority=_value(authority) if direction == OUTBOUND else "",
        method="", path="", protocol="grpc" if grpc else "http",
        response_code=int(code) if code.isdigit() else 0, grpc_status=grpc, response_flags=flags or "-",
        duration_ms=0.0, request_bytes=0, response_bytes=0, start=0.0, peer_principal=peer,
        local_principal=me.principal if peer else "")


class Converted(NamedTuple):
    http: dict[IstioKey, HttpSeries]  # Istio labels -> the sum of the Envoy series named so
    held: tuple[str, ...]  # unknown peer addresses whose (new) series were left out this time (`hold` said so)
    unknown_requests: int  # requests of the series shown whose peer address the directory did not know
    dropped_series: int  # Envoy series left out by the series cap
    dropped_requests: int  # their requests
    labels: dict[EnvoyKey, IstioKey]  # the labels of each Envoy series named this time (not held; capped or not)


class Converter:
    """Per-sidecar state of the conversion (the labels each Envoy series was shown with), so that successive
    scrapes agree. `max_series` caps the Istio label sets, with the ones the caller already holds (`taken`)."""

    def __init__(self, max_series: int = 5000) -> None:
        self.max_series = max_series
        self._shown: dict[EnvoyKey, IstioKey] = {}  # the labels each Envoy series was last shown with
        self._named: set[EnvoyKey] = set()  # ... when its peer was known then (or it had no peer address)
        self._cache: dict[EnvoyKey, tuple[IstioKey, str]] = {}  # labels + unknown peer address, per (me, directory)
        self._cache_for: tuple[SelfInfo | None, Directory | None] = (None, None)
        self._admitted: set[IstioKey] = set()

    def convert(self, series: Mapping[EnvoyKey, HttpSeries], me: SelfInfo, directory: Directory, *,
                existing: Container[IstioKey] = (), taken: int = 0,
                hold: Callable[[str], bool] | None = None) -> Converted:
        """`existing`: label sets the caller already holds (adding to them makes no new series); `taken`: how many
        series the caller holds; `hold(address)`: whether a new series of an unknown peer address should wait."""
        if me != self._cache_for[0]:  # e.g. the ports' services changed: name everything again
            self._named = set()
        if me != self._cache_for[0] or directory is not self._cache_for[1] or len(self._cache) > 65536:
            self._cache = {}
            self._cache_for = (me, directory)
        named: dict[EnvoyKey, IstioKey] = {}
        unknown: set[EnvoyKey] = set()
        held: list[str] = []
        for ek in series:
            hit = self._cache.get(ek)
            if hit is None:
                rec = record_of(ek, me)
                hit = self._cache[ek] = (http_labels(rec, me, directory), unknown_peer_address(rec, directory))
            labels, addr = hit
            if addr:
                if ek in self._named:  # its peer left the directory: its past requests stay its own
                    named[ek] = self._shown[ek]
                    continue
                if ek not in self._shown and hold is not None and hold(addr):
                    held.append(addr)
                    continue
                unknown.add(ek)
            named[ek] = labels
        # the cap: label sets shown last time (or held by the caller) first, then new ones in a stable order
        keys = set(named.values())
        free = {k for k in keys if k in existing or k in self._admitted}
        room = self.max_series - taken - sum(1 for k in free if k not in existing)
        admitted = free | set(sorted(keys - free)[:max(room, 0)])
        out: dict[IstioKey, HttpSeries] = {}
        dropped = dropped_requests = unknown_requests = 0
        shown: dict[EnvoyKey, IstioKey] = {}
        for ek, key in named.items():
            s = series[ek]
            if key not in admitted:
                dropped += 1
                dropped_requests += s.requests
                continue
            shown[ek] = key
            acc = out.get(key)
            if acc is None:
                acc = out[key] = HttpSeries()
            acc.add(s)
            if ek in unknown:
                unknown_requests += s.requests
        self._admitted, self._shown = admitted, shown
        self._named = {ek for ek in shown if ek not in unknown}
        return Converted(out, tuple(dict.fromkeys(held)), unknown_requests, dropped, dropped_requests, named)


class Cumulative:
    """Envoy's native series as counters that never go down, across what Envoy forgets. PURE.

    The stats access logger counts into a scope of its listener: when a listener update replaces the filter
    chain (a new policy, a Telemetry switching to `access-log-stream`) and the old chain has drained, Envoy frees
    the series no new request touched since, and a series created again starts from zero; an Envoy restart
    starts every series from zero. Exported as they are, Istio's counters (a sum of Envoy series) would go
    down, and Prometheus would read that as a reset and count the remaining series again. So, per Envoy series:
        * a series absent from a reading keeps its last values;
        * a series whose request count or a histogram's count went down was reset: its last values are added to
          a base, and it is shown as base + the new values.
    At most `max_kept` series are remembered; beyond that, those absent from the reading are forgotten."""

    def __init__(self, max_kept: int = 65536) -> None:
        self.max_kept = max_kept
        self._last: dict[EnvoyKey, HttpSeries] = {}
        self._base: dict[EnvoyKey, HttpSeries] = {}
        self.resets = 0  # series found reset (or freed and created again) so far

    def update(self, series: Mapping[EnvoyKey, HttpSeries]) -> dict[EnvoyKey, HttpSeries]:
        """The cumulative series after this reading (`series`: split_envoy_text's, the newest reading)."""
        for ek, s in series.items():
            last = self._last.get(ek)
            if last is not None and _went_down(s, last):
                base = self._base.get(ek)
                if base is None:
                    base = self._base[ek] = HttpSeries()
                base.add(last)
                self.resets += 1
            self._last[ek] = s
        if len(self._last) > self.max_kept:
            self._last = {k: v for k, v in self._last.items() if k in series}
            self._base = {k: v for k, v in self._base.items() if k in series}
        return self.view()

    def view(self) -> dict[EnvoyKey, HttpSeries]:
        """The cumulative series as of the last update."""
        out: dict[EnvoyKey, HttpSeries] = {}
        for ek, last in self._last.items():
            base = self._base.get(ek)
            if base is None:
                out[ek] = last
            else:
                total = HttpSeries()
                total.add(base)
                total.add(last)
                out[ek] = total
        return out


def _went_down(s: HttpSeries, last: HttpSeries) -> bool:
    return s.requests < last.requests or any(getattr(s, a).count < getattr(last, a).count
                                             for a in ("duration", "request_bytes", "response_bytes"))


# ---------------------------------------------------------------------- the golden window, from the same series
_CODE, _GRPC = istio.HTTP_LABELS.index("response_code"), istio.HTTP_LABELS.index("grpc_response_status")


class Increase:
    """Requests of one window key since the previous reading: `counts` per duration bucket (+Inf last)."""
    __slots__ = ("requests", "successes", "counts", "sum")

    def __init__(self) -> None:
        self.requests = self.successes = 0
        self.counts = [0] * (len(istio.DURATION_BUCKETS_MS) + 1)
        self.sum = 0.0


def _success(labels: IstioKey) -> bool:
    code = labels[_CODE]
    return istio.is_success(int(code) if code.isdigit() else 0, labels[_GRPC])


class WindowFeed:
    """What Envoy's native series grew by between readings, per window key (as `Aggregator.add_request` would
    have observed those requests). PURE: readings and their time in, increases out.

    The requests, buckets and sum are the duration histogram's (`_count`, buckets, `_sum`), not the counter's:
    Envoy flushes histograms every 5 s, so its counter runs ahead of them and the two would not agree; a request
    reaches the window with the flush that puts it in the histogram. The increase is taken per Envoy series (its
    labels may change between readings: a peer the directory named later), then added up per window key:
        * a series not in the previous reading: all of it (Envoy created it since: its first request);
        * a series whose count or a bucket went down (Envoy restarted): its new values, as Prometheus' rate does;
        * a reading more than `max_gap` seconds after the previous one (or, the first, after `since`: the agent
          starts before its Envoy, so Envoy counted nothing before) is a baseline only: when those requests were
          made is unknown, and putting them all in the current slot would make a burst that never was.
    A series absent from a reading keeps its previous reading (an Envoy restart shows as a reset when it comes
    back), up to `max_kept` series."""

    def __init__(self, since: float, max_gap: float = 60.0, max_kept: int = 65536) -> None:
        self.max_gap, self.max_kept = max_gap, max_kept
        self._prev: dict[EnvoyKey, tuple[int, tuple[int, ...], float]] = {}
        self._at = since

    def update(self, series: Mapping[EnvoyKey, HttpSeries], labels: Mapping[EnvoyKey, IstioKey],
               now: float) -> dict[tuple[str, ...], Increase]:
        """`series`: Envoy's series of this reading (split_envoy_text); `labels`: the Istio labels of those to
        count (Converted.labels: a held series is counted, all of it, once it is named)."""
        baseline = now - self._at > self.max_gap
        self._at = max(self._at, now)
        if len(self._prev) > self.max_kept:
            self._prev = {k: v for k, v in self._prev.items() if k in labels}
        out: dict[tuple[str, ...], Increase] = {}
        for ek, ik in labels.items():
            s = series.get(ek)
            if s is None:
                continue
            h = s.duration
            cur = (h.count, tuple(h.counts), h.sum)
            old = self._prev.get(ek)
            self._prev[ek] = cur
            if baseline or cur == old:
                continue
            if old is None or cur[0] < old[0] or any(c < o for c, o in zip(cur[1], old[1])):
                n, counts, total = cur
            else:
                n, counts, total = cur[0] - old[0], [c - o for c, o in zip(cur[1], old[1])], max(cur[2] - old[2], 0.0)
            if n <= 0:
                continue
            key = window_key(ik)
            inc = out.get(key)
            if inc is None:
                inc = out[key] = Increase()
            inc.requests += n
            inc.successes += n if _success(ik) else 0
            for i, c in enumerate(counts):
                inc.counts[i] += c
            inc.sum += total
        return out
