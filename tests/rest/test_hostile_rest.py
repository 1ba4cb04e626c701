"""The REST API against hostile requests, on a real unix socket with a real store: each is a 4xx answer with a
clear message and changes nothing — bad charsets, broken or bomb-sized Content-Encoding, deep or non-JSON
numbers, instance ports of Infinity — and apply's dryRun/skipUnknown parameters. Plus a property-based run
(hypothesis) of malformed requests: never a 500, never a half-applied input."""
from __future__ import annotations

import gzip
import json

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.api.fuzzkit import hostile_input
from tests.rest.test_rest import DR, VS, Env, files, run

UNKNOWN = "apiVersion: example.com/v1\nkind: Frobnicator\nmetadata: {name: f}\n"


async def raw(env: Env, body: bytes, headers: dict[str, str], path: str = "/api/v1/apply",
              method: str = "POST") -> tuple[int, dict]:
    async with env.session.request(method, "http://mesh" + path, data=body, headers=headers) as r:
        return r.status, await r.json()


def test_charset_encoding_and_size(tmp_path):
    async def t(env: Env) -> None:
        body = json.dumps(files(VS)).encode()
        st_, b = await raw(env, body, {"Content-Type": "application/json; charset=rot13"})
        assert st_ == 415 and "charset" in b["message"]
        st_, b = await raw(env, b"not gzip", {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert st_ == 400 and "cannot be read as gzip" in b["errors"][0]["message"]
        bomb = gzip.compress(b" " * (40 * 1024 * 1024))  # 40 KiB on the wire, 40 MiB inflated
        st_, b = await raw(env, bomb, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        assert st_ == 413
        st_, b = await raw(env, b'{"files": ' * 3000 + b"1" + b"}" * 3000, {"Content-Type": "application/json"})
        assert st_ == 400 and "nested too deeply" in b["errors"][0]["message"]
        st_, b = await raw(env, b'{"files": NaN}', {"Content-Type": "application/json"})
        assert st_ == 400 and "not valid UTF-8 JSON" in b["errors"][0]["message"]
        st_, b = await raw(env, b'{"id": "default.x", "address": "10.0.0.1", "ports": [Infinity]}',
                           {"Content-Type": "application/json"}, "/api/v1/instances/default.x", "PUT")
        assert st_ == 400
        assert env.core.store.revision == 0 and env.core.instances() == []
    run(t, tmp_path)


def test_dry_run_checks_everything_and_stores_nothing(tmp_path):
    async def t(env: Env) -> None:
        st_, b = await env.call("POST", "/api/v1/apply?dryRun=true", json=files(VS, DR))
        assert st_ == 200 and b["dryRun"] is True
        assert [a["action"] for a in b["applied"]] == ["created", "created"]
        assert env.core.store.revision == 0
        await env.call("POST", "/api/v1/apply", json=files(VS))
        st_, b = await env.call("POST", "/api/v1/apply?dryRun=true",
                                json=files(VS, VS.replace("name: reviews", "name: r2")))
        assert [a["action"] for a in b["applied"]] == ["unchanged", "created"]
        st_, b = await env.call("POST", "/api/v1/apply?dryRun=true", json=files(VS.replace("subset: v1", "subset: v_1")))
        assert st_ == 400 and env.core.store.revision == 1
    run(t, tmp_path)


def test_skip_unknown(tmp_path):
    async def t(env: Env) -> None:
        st_, b = await env.call("POST", "/api/v1/apply", json=files(VS + "---\n" + UNKNOWN))
        assert st_ == 400 and "unknown kind 'Frobnicator'" in b["errors"][0]["message"]
        st_, b = await env.call("POST", "/api/v1/apply?skipUnknown=true", json=files(VS + "---\n" + UNKNOWN))
        assert st_ == 200 and [a["name"] for a in b["applied"]] == ["reviews"]
        assert any("skipped: unknown kind 'Frobnicator'" in w for w in b["warnings"])
    run(t, tmp_path)


MALFORMED = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda t: json.dumps({"files": [{"name": "f", "text": t}]}).encode(), hostile_input()),
    st.builds(lambda v: json.dumps({"files": v}).encode(), st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3), max_leaves=10)),
)


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(st.lists(MALFORMED, min_size=1, max_size=8))
def test_malformed_requests_never_500_nor_half_apply(tmp_path_factory, bodies):
    tmp = tmp_path_factory.mktemp("rest-fuzz")

    async def t(env: Env) -> None:
        for body in bodies:
            before = (env.core.store.revision, sorted(json.dumps(r.to_dict(), sort_keys=True)
                                                      for r in env.core.store.list()))
            st_, b = await raw(env, body, {"Content-Type": "application/json"})
            assert st_ < 500, b
            if st_ >= 400:
                after = (env.core.store.revision, sorted(json.dumps(r.to_dict(), sort_keys=True)
                                                         for r in env.core.store.list()))
                assert after == before
    run(t, tmp)


AUTH_HEADERS = st.one_of(
    st.none(), st.sampled_from(["", "Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "Bearer mzp_" + "x" * 70,
                                "Bearer " + "a" * 20000, "bearer\tx", "Bearer \u00e9t\u00e9"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(lambda t: "Bearer " + t),
)


@settings(max_examples=60, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(st.lists(st.tuples(st.sampled_from(["tenant", "reader", "bad"]), AUTH_HEADERS, hostile_input()),
                min_size=1, max_size=4))
def test_hostile_input_with_auth_never_500_and_tenants_stay_in_their_namespaces(tmp_path_factory, calls):
    """Hostile documents sent with a tenant token (namespace shop), a read-only token, or a hostile
    Authorization header: never a 500; a refusal (401/403/400) changes nothing; whatever a tenant got stored
    is in its own namespace; nothing at all is stored without a writer's token."""
    from mizzen.server.auth_tokens import TENANT, TokenRecord, issue

    tmp = tmp_path_factory.mktemp("rest-auth-fuzz")

    async def t(env: Env) -> None:
        tenant = issue(env.auth.tokens, TokenRecord("", TENANT, ("shop",), False, created=1.0))[0]
        reader = issue(env.auth.tokens, TokenRecord("", TENANT, ("shop",), True, created=1.0))[0]
        for who, header, text in calls:
            before = (env.core.store.revision, sorted(json.dumps(r.to_dict(), sort_keys=True)
                                                      for r in env.core.store.list()))
            token = {"tenant": tenant, "reader": reader}.get(who)
            auth = f"Bearer {token}" if token else header
            # the session's admin header is replaced (None: sent without any Authorization header)
            headers = {"Content-Type": "application/json", "Authorization": auth if auth is not None else ""}
            body = json.dumps({**files(text), "namespace": "shop"}).encode()
            try:
                async with env.session.post("http://mesh/api/v1/apply", data=body, headers=headers) as r:
                    st_, text_ = r.status, await r.text()
            except (ValueError, UnicodeError):
                continue  # aiohttp itself refuses to send a header value with control characters
            # aiohttp's HTTP parser answers an over-long header line itself, in plain text; everything else is JSON
            b = json.loads(text_) if not (st_ == 400 and len(header or "") > 8000) else text_
            assert st_ < 500, b
            after = (env.core.store.revision, sorted(json.dumps(r.to_dict(), sort_keys=True)
                                                     for r in env.core.store.list()))
            if st_ >= 400 or who != "tenant":
                assert after == before, (who, st_, b)
            if who == "bad":  # 400: a header line over aiohttp's 8 KiB limit is refused before auth
                assert st_ == 401 or (st_ == 400 and len(header or "") > 8000), (header, st_, b)
            elif who == "reader":
                assert st_ in (400, 403), (st_, b)
            for r in env.core.store.list():
                assert r.namespace == "shop", r.key  # only the tenant wrote, and only into its namespace
    run(t, tmp)
