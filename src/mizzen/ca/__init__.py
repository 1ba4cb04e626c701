"""The mesh's certificate authority and workload identities (docs/security.md).

- `identity`     SPIFFE IDs `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`, pod identities (pure)
- `authority`    roots, per-mesh intermediates, CSR signing with the caller's identity (no files, no clock)
- `files`        the CA's files in the state dir (Istio's plug-in names), `ca init --root-out/--from`
- `credentials`  per-pod bearer tokens: the store the control plane verifies, the files the runner provisions
- `proto`        Istio's `IstioCertificateService` messages; `client` the agent's TLS client of it
- `secrets_view` what a proxy holds (`proxy-config secrets`), from Envoy's admin JSON (pure)
- `commands`     `mizzen ca init|show`
"""
