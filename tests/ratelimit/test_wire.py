"""The hand-written RLS codec against the generated protobuf classes, both ways."""
import random

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


def test_requests_written_for_clients_parse_as_the_generated_class():
    req = rls_pb2.RateLimitRequest.FromString(wire.encode_descriptors("mizzen", [[("k", "v"), ("é", "ü")], []], 3))
    assert (req.domain, req.hits_addend, [[(e.key, e.value) for e in d.entries] for d in req.descriptors]) == \
        ("mizzen", 3, [[("k", "v"), ("é", "ü")], []])


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
