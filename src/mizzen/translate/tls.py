"""Transport sockets: mesh mTLS (certificates from the agent's SDS), DestinationRule TLS, plaintext. Pure.

The workload certificate and the mesh roots reach Envoy over SDS from the pod's agent (`agent/sds.py`): the
bootstrap has a static cluster `sds-grpc` to its unix socket, and every TLS context here names the secrets
`default` (chain + key) and `ROOTCA` (trust anchors), as Istio's do.

- Inbound (`downstream_mtls`): the server requires a client certificate chaining to ROOTCA and carrying a
  SPIFFE ID of the mesh's trust domain. ALPN: `ISTIO_ALPNS` are what a meshed caller offers; the inbound
  PERMISSIVE chain matches them (`tls_inspector`), so plaintext from sidecar-less callers and mTLS from
  sidecars share a port.
- Outbound ISTIO_MUTUAL (`upstream_istio_mutual`): the caller presents `default`, trusts ROOTCA, and checks
  that the server's URI SAN is one of the service's expected identities (secure naming); SNI as Istio's
  `outbound_.<port>_.<subset>_.<host>`.
- Auto mTLS (`auto_mtls_matches`): Istio's `transport_socket_matches` — endpoints whose EDS metadata says
  `tlsMode: istio` get ISTIO_MUTUAL, all others plaintext.
- DestinationRule SIMPLE/MUTUAL (`upstream_from_files`): files in the caller's pod.
"""
from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2
from google.protobuf import struct_pb2

from ..api.client_tls import ClientTLSSettings
from ..model.security import ISTIO_TLS
from .common import pack

SDS_CLUSTER = "sds-grpc"
DEFAULT_SECRET = "default"
ROOT_SECRET = "ROOTCA"
TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER_SOCKET = "envoy.transport_sockets.raw_buffer"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"  # EDS metadata filter the cluster matches read
# What a meshed caller offers, by the protocol of the port (Istio's names), and what inbound chains match.
ALPN_HTTP11, ALPN_H2, ALPN_TCP = ("istio-http/1.1",), ("istio-h2", "h2"), ("istio",)
ISTIO_ALPNS = ("istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2")


def caller_alpn(protocol: str) -> tuple[str, ...]:
    if protocol in ("HTTP2", "GRPC"):
        return ALPN_H2
    if protocol == "HTTP":
        return ALPN_HTTP11
    return ALPN_TCP


def sds_secret(name: str) -> secret_pb2.SdsSecretConfig:
    """A secret from the agent (state of the world over gRPC, as Istio's agent serves it)."""
    src = config_source_pb2.ConfigSource(resource_api_version=config_source_pb2.V3)
    api = src.api_config_source
    api.api_type = config_source_pb2.ApiConfigSource.GRPC
    api.transport_api_version = config_source_pb2.V3
    api.set_node_on_first_message_only = True
    api.grpc_services.append(grpc_service_pb2.GrpcService(
        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER)))
    return secret_pb2.SdsSecretConfig(name=name, sds_config=src)


def _params() -> common_pb2.TlsParameters:
    return common_pb2.TlsParameters(tls_minimum_protocol_version=common_pb2.TlsParameters.TLSv1_2,
                                    tls_maximum_protocol_version=common_pb2.TlsParameters.TLSv1_3)


def _uri_matchers(sans: tuple[str, ...] | list[str], *, prefix: bool = False) -> list:
    out = []
    for s in sans:
        m = string_pb2.StringMatcher(prefix=s) if prefix else string_pb2.StringMatcher(exact=s)
        out.append(common_pb2.SubjectAltNameMatcher(san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=m))
    return out


def _mesh_context(sans: list, alpn: tuple[str, ...]) -> tls_pb2.CommonTlsContext:
    ctx = tls_pb2.CommonTlsContext(tls_params=_params(), alpn_protocols=list(alpn))
    ctx.tls_certificate_sds_secret_configs.append(sds_secret(DEFAULT_SECRET))
    cvc = ctx.combined_validation_context
    cvc.default_validation_context.SetInParent()
    cvc.default_validation_context.match_typed_subject_alt_names.extend(sans)
    cvc.validation_context_sds_secret_config.CopyFrom(sds_secret(ROOT_SECRET))
    return ctx


def socket(msg) -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=pack(msg))


def raw_buffer() -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(name=RAW_BUFFER_SOCKET, typed_config=pack(raw_buffer_pb2.RawBuffer()))


def downstream_mtls(trust_domain: str, alpn: tuple[str, ...] = ()) -> base_pb2.TransportSocket:
    """The server side of mesh mTLS: a client certificate of this trust domain is required."""
    ctx = tls_pb2.DownstreamTlsContext(common_tls_context=_mesh_context(
        _uri_matchers([f"spiffe://{trust_domain}/"], prefix=True), alpn))
    ctx.require_client_certificate.value = True
    return socket(ctx)


def upstream_istio_mutual(sni: str, sans: tuple[str, ...], protocol: str) -> base_pb2.TransportSocket:
    """The client side of mesh mTLS, checking that the server is one of `sans` (none: any mesh identity)."""
    ctx = tls_pb2.UpstreamTlsContext(common_tls_context=_mesh_context(_uri_matchers(sans), caller_alpn(protocol)),
                                     sni=sni)
    return socket(ctx)


def upstream_from_files(tls: ClientTLSSettings, protocol: str) -> base_pb2.TransportSocket:
    """DestinationRule SIMPLE / MUTUAL: TLS to a server outside the mesh's PKI, with files in the pod."""
    common = tls_pb2.CommonTlsContext(tls_params=_params())
    if protocol in ("HTTP2", "GRPC"):
        common.alpn_protocols.append("h2")
    if tls.mode == "MUTUAL" and tls.client_certificate and tls.private_key:  # not with credentialName (MZ0110)
        common.tls_certificates.add(certificate_chain=base_pb2.DataSource(filename=tls.client_certificate),
                                    private_key=base_pb2.DataSource(filename=tls.private_key))
    if not tls.insecure_skip_verify:
        vc = common.validation_context
        if tls.ca_certificates:
            vc.trusted_ca.filename = tls.ca_certificates
        else:  # Istio verifies against the system's roots when no CA is given
            vc.system_root_certs.SetInParent()
        vc.match_typed_subject_alt_names.extend(_uri_or_dns(tls.subject_alt_names))
        if tls.ca_crl:
            vc.crl.filename = tls.ca_crl
    ctx = tls_pb2.UpstreamTlsContext(common_tls_context=common)
    if tls.sni:
        ctx.sni = tls.sni
    else:  # as Istio: the request's host is the SNI, and the server must present it
        ctx.auto_host_sni = True
        # Envoy refuses SAN-from-SNI validation without a trusted CA file (the system roots do not count)
        ctx.auto_sni_san_validation = bool(tls.ca_certificates) and not tls.subject_alt_names and \
            not tls.insecure_skip_verify
    return socket(ctx)


def _uri_or_dns(sans: list[str]) -> list:
    out = []
    for s in sans:
        kind = common_pb2.SubjectAltNameMatcher.URI if "://" in s else common_pb2.SubjectAltNameMatcher.DNS
        out.append(common_pb2.SubjectAltNameMatcher(san_type=kind, matcher=string_pb2.StringMatcher(exact=s)))
    return out


def auto_mtls_matches(c: cluster_pb2.Cluster, mutual: base_pb2.TransportSocket) -> None:
    """Istio's auto mTLS on a cluster: mTLS to endpoints marked `tlsMode: istio`, plaintext to the others."""
    match = struct_pb2.Struct()
    match.fields["tlsMode"].string_value = ISTIO_TLS
    c.transport_socket_matches.add(name=f"tlsMode-{ISTIO_TLS}", match=match, transport_socket=mutual)
    c.transport_socket_matches.add(name="tlsMode-disabled", match=struct_pb2.Struct(), transport_socket=raw_buffer())


def endpoint_metadata(tls_mode: str) -> base_pb2.Metadata:
    md = base_pb2.Metadata()
    md.filter_metadata[TRANSPORT_SOCKET_MATCH].fields["tlsMode"].string_value = tls_mode
    return md


__all__ = ["SDS_CLUSTER", "DEFAULT_SECRET", "ROOT_SECRET", "ISTIO_ALPNS", "TLS_INSPECTOR", "caller_alpn",
           "sds_secret", "downstream_mtls", "upstream_istio_mutual", "upstream_from_files", "auto_mtls_matches",
           "endpoint_metadata", "raw_buffer", "socket"]
