"""The sidecar's uid, defined once (PURE, imports nothing): Envoy runs as 1337 (Istio's convention), traffic
capture leaves that uid's connections alone, and no app may run as it. `api.core` validates against it;
`client.layout` re-exports it for the processes that chown and capture."""
ENVOY_UID = 1337
