"""The part of etcd's v3 gRPC API that Mizzen speaks, declared here as protobuf descriptors.

Mizzen talks to etcd with grpcio directly. The message classes are built at import time from the table
below (a private descriptor pool: no generated code, no protoc at install, no clash with another etcd
client's stubs in the default pool). Only the messages and fields Mizzen uses are declared; protobuf skips
unknown fields, so answers from newer etcd servers parse. Field numbers are etcd's wire contract
(`etcdserverpb` / `mvccpb`, etcd 3.4 and later).
"""
from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"bytes": _F.TYPE_BYTES, "int64": _F.TYPE_INT64, "uint64": _F.TYPE_UINT64, "bool": _F.TYPE_BOOL,
            "string": _F.TYPE_STRING}

# message -> [(field, number, type, repeated, oneof)]; a type not in _SCALARS is a message or an enum
# (enums: "enum:<Name>", declared in _ENUMS)
_MESSAGES: dict[str, list[tuple[str, int, str, bool, str | None]]] = {
    "mvccpb.KeyValue": [("key", 1, "bytes", False, None), ("create_revision", 2, "int64", False, None),
                        ("mod_revision", 3, "int64", False, None), ("version", 4, "int64", False, None),
                        ("value", 5, "bytes", False, None), ("lease", 6, "int64", False, None)],
    "mvccpb.Event": [("type", 1, "enum:mvccpb.Event.EventType", False, None),
                     ("kv", 2, "mvccpb.KeyValue", False, None), ("prev_kv", 3, "mvccpb.KeyValue", False, None)],
    "etcdserverpb.ResponseHeader": [("cluster_id", 1, "uint64", False, None), ("member_id", 2, "uint64", False, None),
                                    ("revision", 3, "int64", False, None), ("raft_term", 4, "uint64", False, None)],
    "etcdserverpb.RangeRequest": [("key", 1, "bytes", False, None), ("range_end", 2, "bytes", False, None),
                                  ("limit", 3, "int64", False, None), ("revision", 4, "int64", False, None),
                                  ("serializable", 7, "bool", False, None), ("keys_only", 8, "bool", False, None),
                                  ("count_only", 9, "bool", False, None)],
    "etcdserverpb.RangeResponse": [("header", 1, "etcdserverpb.ResponseHeader", False, None),
                                   ("kvs", 2, "mvccpb.KeyValue", True, None), ("more", 3, "bool", False, None),
                                   ("count", 4, "int64", False, None)],
    "etcdserverpb.PutRequest": [("key", 1, "bytes", False, None), ("value", 2, "bytes", False, None),
                                ("lease", 3, "int64", False, None), ("prev_kv", 4, "bool", False, None)],
    "etcdserverpb.PutResponse": [("header", 1, "etcdserverpb.ResponseHeader", False, None),
                                 ("prev_kv", 2, "mvccpb.KeyValue", False, None)],
    "etcdserverpb.DeleteRangeRequest": [("key", 1, "bytes", False, None), ("range_end", 2, "bytes", False, None),
                                        ("prev_kv", 3, "bool", False, None)],
    "etcdserverpb.DeleteRangeResponse": [("header", 1, "etcdserverpb.ResponseHeader", False, None),
                                         ("deleted", 2, "int64", False, None),
                                         ("prev_kvs", 3, "mvccpb.KeyValue", True, None)],
    "etcdserverpb.RequestOp": [("request_range", 1, "etcdserverpb.RangeRequest", False, "request"),
                               ("request_put", 2, "etcdserverpb.PutRequest", False, "request"),
                               ("request_delete_range", 3, "etcdserverpb.DeleteRangeRequest", False, "request")],
    "etcdserverpb.ResponseOp": [("response_range", 1, "etcdserverpb.RangeResponse", False, "response"),
                                ("response_put", 2, "etcdserverpb.PutResponse", False, "response"),
                                ("response_delete_range", 3, "etcdserverpb.DeleteRangeResponse", False, "response")],
    "etcdserverpb.Compare": [("result", 1, "enum:etcdserverpb.Compare.CompareResult", False, None),
                             ("target", 2, "enum:etcdserverpb.Compare.CompareTarget", False, None),
                             ("key", 3, "bytes", False, None),
                             ("version", 4, "int64", False, "target_union"),
                             ("create_revision", 5, "int64", False, "target_union"),
                             ("mod_revision", 6, "int64", False, "target_union"),
                             ("value", 7, "bytes", False, "target_union"),
                             ("lease", 8, "int64", False, "target_union"),
                             ("range_end", 64, "bytes", False, None)],
    "etcdserverpb.TxnRequest": [("compare", 1, "etcdserverpb.Compare", True, None),
                                ("success", 2, "etcdserverpb.RequestOp", True, None),
                                ("failure", 3, "etcdserverpb.RequestOp", True, None)],
    "etcdserverpb.TxnResponse": [("header", 1, "etcdserverpb.ResponseHeader", False, None),
                                 ("succeeded", 2, "bool", False, None),
                                 ("responses", 3, "etcdserverpb.ResponseOp", True, None)],
    "etcdserverpb.WatchCreateRequest": [("key", 1, "bytes", False, None), ("range_end", 2, "bytes", False, None),
                                        ("start_revision", 3, "int64", False, None),
                                        ("progress_notify", 4, "bool", False, None),
                                        ("prev_kv", 6, "bool", False, None)],
    "etcdserverpb.WatchCancelRequest": [("watch_id", 1, "int64", False, None)],
    "etcdserverpb.WatchProgressRequest": [],
    "etcdserverpb.WatchRequest": [("create_request", 1, "etcdserverpb.WatchCreateRequest", False, "request_union"),
                                  ("cancel_request", 2, "etcdserverpb.WatchCancelRequest", False, "request_union"),
                                  ("progress_request", 3, "etcdserverpb.WatchProgressRequest", False,
                                   "request_union")],
    "etcdserverpb.WatchResponse": [("header", 1, "etcdserverpb.ResponseHeader", False, None),
                                   ("watch_id", 2, "int64", False, None), ("created", 3, "bool", False, None),
                                   ("canceled", 4, "bool", False, None), ("compact_revision", 5, "int64", False, None),
                                   ("cancel_reason", 6, "string", False, None),
                                   ("events", 11, "mvccpb.Event", True, None)],
    "etcdserverpb.LeaseGrantRequest": [("TTL", 1, "int64", False, None), ("ID", 2, "int64", False, None)],
    "etcdserverpb.LeaseGrantResponse": [("header", 1, "etcdserverpb.ResponseHeader", False, None),
                                        ("ID", 2, "int64", False, None), ("TTL", 3, "int64", False, None),
                                        ("error", 4, "string", False, None)],
    "etcdserverpb.LeaseRevokeRequest": [("ID", 1, "int64", False, None)],
    "etcdserverpb.LeaseRevokeResponse": [("header", 1, "etcdserverpb.ResponseHeader", False, None)],
    "etcdserverpb.LeaseKeepAliveRequest": [("ID", 1, "int64", False, None)],
    "etcdserverpb.LeaseKeepAliveResponse": [("header", 1, "etcdserverpb.ResponseHeader", False, None),
                                            ("ID", 2, "int64", False, None), ("TTL", 3, "int64", False, None)],
    "etcdserverpb.StatusRequest": [],
    "etcdserverpb.StatusResponse": [("header", 1, "etcdserverpb.ResponseHeader", False, None),
                                    ("version", 2, "string", False, None), ("dbSize", 3, "int64", False, None),
                                    ("leader", 4, "uint64", False, None), ("raftIndex", 5, "uint64", False, None),
                                    ("raftTerm", 6, "uint64", False, None)],
}
_ENUMS: dict[str, list[tuple[str, int]]] = {
    "mvccpb.Event.EventType": [("PUT", 0), ("DELETE", 1)],
    "etcdserverpb.Compare.CompareResult": [("EQUAL", 0), ("GREATER", 1), ("LESS", 2), ("NOT_EQUAL", 3)],
    "etcdserverpb.Compare.CompareTarget": [("VERSION", 0), ("CREATE", 1), ("MOD", 2), ("VALUE", 3), ("LEASE", 4)],
}

# (service, method) -> (request, response, client-streaming and server-streaming)
METHODS: dict[str, tuple[str, str, bool]] = {
    "/etcdserverpb.KV/Range": ("RangeRequest", "RangeResponse", False),
    "/etcdserverpb.KV/Put": ("PutRequest", "PutResponse", False),
    "/etcdserverpb.KV/DeleteRange": ("DeleteRangeRequest", "DeleteRangeResponse", False),
    "/etcdserverpb.KV/Txn": ("TxnRequest", "TxnResponse", False),
    "/etcdserverpb.Watch/Watch": ("WatchRequest", "WatchResponse", True),
    "/etcdserverpb.Lease/LeaseGrant": ("LeaseGrantRequest", "LeaseGrantResponse", False),
    "/etcdserverpb.Lease/LeaseRevoke": ("LeaseRevokeRequest", "LeaseRevokeResponse", False),
    "/etcdserverpb.Lease/LeaseKeepAlive": ("LeaseKeepAliveRequest", "LeaseKeepAliveResponse", True),
    "/etcdserverpb.Maintenance/Status": ("StatusRequest", "StatusResponse", False),
}


def _build() -> dict[str, Any]:
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for pkg in ("mvccpb", "etcdserverpb"):
        f = descriptor_pb2.FileDescriptorProto(name=f"mizzen_etcd_{pkg}.proto", package=pkg, syntax="proto3")
        if pkg == "etcdserverpb":
            f.dependency.append("mizzen_etcd_mvccpb.proto")
        files[pkg] = f
    for full, fields in _MESSAGES.items():
        pkg, name = full.split(".", 1)
        msg = files[pkg].message_type.add(name=name)
        oneofs: list[str] = []
        for enum_full, values in _ENUMS.items():
            if enum_full.rsplit(".", 1)[0] == full:
                e = msg.enum_type.add(name=enum_full.rsplit(".", 1)[1])
                for vname, num in values:
                    e.value.add(name=vname, number=num)
        for fname, num, ftype, repeated, oneof in fields:
            fd = msg.field.add(name=fname, number=num,
                               label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
            if ftype in _SCALARS:
                fd.type = _SCALARS[ftype]
            elif ftype.startswith("enum:"):
                fd.type, fd.type_name = _F.TYPE_ENUM, "." + ftype[5:]
            else:
                fd.type, fd.type_name = _F.TYPE_MESSAGE, "." + ftype
            if oneof is not None:
                if oneof not in oneofs:
                    oneofs.append(oneof)
                    msg.oneof_decl.add(name=oneof)
                fd.oneof_index = oneofs.index(oneof)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(files["mvccpb"])
    pool.Add(files["etcdserverpb"])
    return {full.split(".", 1)[1]: message_factory.GetMessageClass(pool.FindMessageTypeByName(full))
            for full in _MESSAGES}


_CLASSES = _build()

KeyValue = _CLASSES["KeyValue"]
Event = _CLASSES["Event"]
RangeRequest = _CLASSES["RangeRequest"]
RangeResponse = _CLASSES["RangeResponse"]
PutRequest = _CLASSES["PutRequest"]
DeleteRangeRequest = _CLASSES["DeleteRangeRequest"]
RequestOp = _CLASSES["RequestOp"]
ResponseOp = _CLASSES["ResponseOp"]
Compare = _CLASSES["Compare"]
TxnRequest = _CLASSES["TxnRequest"]
TxnResponse = _CLASSES["TxnResponse"]
WatchRequest = _CLASSES["WatchRequest"]
WatchCreateRequest = _CLASSES["WatchCreateRequest"]
WatchCancelRequest = _CLASSES["WatchCancelRequest"]
WatchProgressRequest = _CLASSES["WatchProgressRequest"]
WatchResponse = _CLASSES["WatchResponse"]
LeaseGrantRequest = _CLASSES["LeaseGrantRequest"]
LeaseRevokeRequest = _CLASSES["LeaseRevokeRequest"]
LeaseKeepAliveRequest = _CLASSES["LeaseKeepAliveRequest"]
StatusRequest = _CLASSES["StatusRequest"]

EVENT_PUT, EVENT_DELETE = 0, 1
CMP_EQUAL, CMP_GREATER, CMP_LESS, CMP_NOT_EQUAL = 0, 1, 2, 3
TARGET_VERSION, TARGET_CREATE, TARGET_MOD, TARGET_VALUE, TARGET_LEASE = 0, 1, 2, 3, 4


def message_class(name: str) -> Any:
    return _CLASSES[name]
