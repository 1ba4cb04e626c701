"""Istio's certificate service, `istio.v1.auth.IstioCertificateService` (security/v1alpha1/ca.proto), as
protobuf message classes built from a descriptor here (no protoc step, no vendored generated code).

    message IstioCertificateRequest  { string csr = 1; int64 validity_duration = 3;
                                       google.protobuf.Struct metadata = 4; }
    message IstioCertificateResponse { repeated string cert_chain = 1; }   // leaf first, root last
    service IstioCertificateService  { rpc CreateCertificate(IstioCertificateRequest)
                                           returns (IstioCertificateResponse); }

Authentication travels beside the request, as in Istio: gRPC metadata `authorization: Bearer <token>`.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

PACKAGE = "istio.v1.auth"
SERVICE = f"{PACKAGE}.IstioCertificateService"
CREATE_METHOD = f"/{SERVICE}/CreateCertificate"


def _build() -> tuple[type, type]:
    pool = descriptor_pool.Default()
    name = "istio/v1/auth/ca.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        f = descriptor_pb2.FileDescriptorProto(name=name, package=PACKAGE, syntax="proto3",
                                               dependency=[struct_pb2.DESCRIPTOR.name])
        F = descriptor_pb2.FieldDescriptorProto
        req = f.message_type.add(name="IstioCertificateRequest")
        req.field.add(name="csr", number=1, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL, json_name="csr")
        req.field.add(name="validity_duration", number=3, type=F.TYPE_INT64, label=F.LABEL_OPTIONAL,
                      json_name="validityDuration")
        req.field.add(name="metadata", number=4, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                      type_name=".google.protobuf.Struct", json_name="metadata")
        resp = f.message_type.add(name="IstioCertificateResponse")
        resp.field.add(name="cert_chain", number=1, type=F.TYPE_STRING, label=F.LABEL_REPEATED,
                       json_name="certChain")
        svc = f.service.add(name="IstioCertificateService")
        svc.method.add(name="CreateCertificate", input_type=f".{PACKAGE}.IstioCertificateRequest",
                       output_type=f".{PACKAGE}.IstioCertificateResponse")
        pool.Add(f)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.IstioCertificateRequest")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.IstioCertificateResponse")))


IstioCertificateRequest, IstioCertificateResponse = _build()
