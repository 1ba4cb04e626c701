"""Telemetry: Istio's standard metrics computed from Envoy's access-log stream, golden metrics, top paths,
traces, tap. See docs/observability.md for the design and the measurements behind it.

Pure modules (no sockets, threads, clocks or files; time is passed in):
    istio      metric families, label names and histogram buckets as Istio defines them
    records    one request / TCP connection as Envoy reported it (from the gRPC access-log messages)
    peers      who is at an address: workload, namespace, app, version, principal, services
    aggregate  records -> Istio series (bounded: no per-path labels, a series cap) + time windows
    native     Envoy-native request series (the `envoy-stats` provider) -> Istio series, at scrape time
    exposition the Prometheus text format (render, and a small parser for merging scrapes)
    golden     rps, success rate, p50/p95/p99 from windows (`mizzen stat`, the console)
    top        the busiest paths with bounded memory (space-saving) for `mizzen top`
    traces     spans (OTLP or Zipkin v2) and a bounded in-memory trace store, waterfalls
    tap        Envoy tap traces -> request rows for `mizzen tap`
    envoy      the Envoy config (JSON form) for the access-log stream, native metrics, tracing and tap
    cpmetrics  the control plane's own metrics (prometheus-client definitions)
Runtime parts: `otlp_server` (OTLP/gRPC + Zipkin receivers into a TraceStore) and `mizzen.agent.telemetry`
(the access-log receiver and the merged scrape of a sidecar).
"""
