"""The hand-written RLS codec against the generated protobuf classes, both ways."""
import random

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from mizzen.api import load_text
from mizzen.ratelimit import engine, wire
from mizzen.ratelimit.algorithms import Decision
from mizzen.ratelimit.table import build_table
from mizzen.server.ratelimit import to_proto

LIMITS = build_table(load_text("""
apiVersion: mizzen.dev/v1
kind: RateLimit
metadata: {name: r, namespace: ns}
spec:
  host: a
  mode: global
  response: {status: 429, body: "slow down"}
  limits:
  - {name: a, requestsPerUnit: 30, unit: minute, key: [{header: x-user}]}
  - {name: b, rate: 2.5, algorithm: gcra, strategy: delay, maxDelay: 1s}
  - {name: c, rate: 1, shadow: true}
""").resources)


def test_requests_decode_like_the_generated_parser():
    rng = random.Random(7)
    for _ in range(200):
        req = rls_pb2.RateLimitRequest(domain=rng.choice(["mizzen", "other", ""]), hits_addend=rng.choice([0, 1, 7]))
        for _ in range(rng.randrange(4)):
            d = req.descriptors.add()
            for _ in range(rng.randrange(4)):
                d.entries.add(key=rng.choice(["mizzen_limit", "header:x-user", "é"]), value=str(rng.random()))
            if rng.random() < 0.5:
                d.hits_addend.value = rng.randrange(5)
            if rng.random() < 0.3:
                d.limit.requests_per_unit = 5  # an override the service ignores
        domain, descs, hits = wire.decode_request(req.SerializeToString())
        assert (domain, hits) == (req.domain, req.hits_addend)
        assert descs == [([(e.key, e.value) for e in d.entries], d.hits_addend.value if d.HasField("hits_addend")
                          else None) for d in req.descriptors]
    assert wire.decode_request(wire.encode_descriptors("mizzen", [[("k", "v")]], 3)) == ("mizzen", [([("k", "v")], None)], 3)


def test_responses_encode_like_the_generated_serializer():
    rng = random.Random(3)
    for _ in range(200):
        descs = [([("mizzen_limit", rng.choice(["ns/r/a", "ns/r/b", "ns/r/c", "nope"])), ("header:x-user", "u")], None)
                 for _ in range(rng.randrange(1, 4))]
        checks = engine.plan(LIMITS, "mizzen", descs)
        decisions = [None if c.limit is None else Decision(
            rng.random() < 0.6, c.limit.quota, rng.randrange(0, 30), rng.random() * 90, rng.random() * 3,
            rng.choice([0.0, 0.25])) for c in checks]
        for answer in (engine.respond(checks, decisions), engine.fail(checks)):
            mine = rls_pb2.RateLimitResponse.FromString(wire.encode_response(answer))
            assert mine == to_proto(answer)
