"""RequestAuthentication → `envoy.filters.http.jwt_authn` on the callee's side (inbound, and a gateway's chains
when the RequestAuthentication selects the gateway workload), as Istio builds it.
Pure: keys fetched from a `jwksUri` come in the snapshot (`Snapshot.jwks`, fetched by the control plane).

- one provider per jwtRule of the RequestAuthentications that apply to the proxy (`origins-<i>`, in order):
  `issuer`, `audiences`, the keys inline (`jwks`, or what was fetched from `jwksUri`), `fromHeaders` (name +
  value prefix), `fromParams`, `fromCookies` (Envoy's defaults — `Authorization: Bearer` and the
  `access_token` parameter — when none is given), `outputPayloadToHeader` (`forward_payload_header`),
  `outputClaimToHeaders`, `forwardOriginalToken` (`forward`; by default the token is removed before the app);
- every provider writes the verified payload to dynamic metadata (`payload`), which the RBAC filters read for
  `requestPrincipals` and `request.auth.*` (translate/filters/rbac.py); `scope`, `permission` and the
  rule's `spaceDelimitedClaims` are split on spaces into lists, as Istio does;
- the requirement is Istio's: a request without a token passes (`allow_missing`), one with a token must have
  a valid one for some provider, else Envoy answers **401**. With several providers: any one provider, or all
  of (provider_i or missing) — so two providers reading the same header still work. Whether a token is
  *required* is an AuthorizationPolicy's job (`requestPrincipals: ["*"]` → 403 without one).
- a `jwksUri` whose keys are not (yet) fetched gets a key set nobody has the private key of (Istio's fake
  JWKS): tokens of that issuer get 401 until the fetch succeeds and is pushed; requests without one pass.
"""
from __future__ import annotations

import json
from typing import Mapping

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm_pb2
from google.protobuf import empty_pb2

from ...api.authorization import JWTRule
from ...model.authz import Jwks
from ..common import pack
from .base import Chain, Feature, ViewContext
from .rbac import JWT_PAYLOAD

NAME = "envoy.filters.http.jwt_authn"

# An RSA public key whose private key was thrown away: no token verifies against it.
UNUSABLE_JWKS = json.dumps({"keys": [{
    "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "mizzen-unfetched",
    "n": "w-apdQD3nxseUq7liQT0LwtvgDRZ5uQVIaA4L52cJCn5XVHJ8Algh1cXlOIuM1EVqlsGxBBXHe-jKHZb8bAf7JooQyKg3pDXWA9dr"
         "-fws1INJnX-RXzUTc7RbU8XQImEUb18SFo6m9ZwubB5N3W1SkhxOZlXR4mr5c7-sjnFATBbuEPfypnKQME4ZFlFhSLpCrrb6gwCh3fm"
         "7rMj_Ae2zHkqwdGYvZ9q-k_Xw0ERXkkeIQz7Wnr5mF8FnzTj8KMpOO4dbHjM2bBOufraKKMSNl_Qoo3TAvhRUgLi8jMSmhZzbubQjZS"
         "tu8KjdQ7XRTlKItjuWxE3wS1nvdWoNAON4w"}]}, separators=(",", ":"))

SPACE_DELIMITED_CLAIMS = ("scope", "permission")


def keys_for(rule: JWTRule, fetched: Mapping[str, Jwks]) -> str:
    """The JWKS text Envoy gets for a rule: inline `jwks`, else what was fetched from `jwksUri` (the last good
    set when a refresh failed), else the unusable set."""
    if rule.jwks:
        return rule.jwks
    got = fetched.get(rule.jwks_uri)
    return got.keys if got is not None and got.keys else UNUSABLE_JWKS


def provider(rule: JWTRule, fetched: Mapping[str, Jwks]) -> jwt_pb2.JwtProvider:
    p = jwt_pb2.JwtProvider(issuer=rule.issuer, audiences=rule.audiences, forward=rule.forward_original_token,
                            payload_in_metadata=JWT_PAYLOAD)
    p.normalize_payload_in_metadata.space_delimited_claims.extend(
        dict.fromkeys((*SPACE_DELIMITED_CLAIMS, *rule.space_delimited_claims)))
    p.local_jwks.CopyFrom(base_pb2.DataSource(inline_string=keys_for(rule, fetched)))
    for h in rule.from_headers:
        p.from_headers.add(name=h.name, value_prefix=h.prefix)
    p.from_params.extend(rule.from_params)
    p.from_cookies.extend(rule.from_cookies)
    if rule.output_payload_to_header:
        p.forward_payload_header = rule.output_payload_to_header
    for c in rule.output_claim_to_headers:
        p.claim_to_headers.add(header_name=c.header, claim_name=c.claim)
    return p


def _provider_or_missing(name: str) -> jwt_pb2.JwtRequirement:
    return jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(requirements=[
        jwt_pb2.JwtRequirement(provider_name=name), jwt_pb2.JwtRequirement(allow_missing=empty_pb2.Empty())]))


def authentication(rules: list[JWTRule], fetched: Mapping[str, Jwks]) -> jwt_pb2.JwtAuthentication | None:
    if not rules:
        return None
    cfg = jwt_pb2.JwtAuthentication(bypass_cors_preflight=True)
    names = []
    for i, rule in enumerate(rules):
        name = f"origins-{i}"
        cfg.providers[name].CopyFrom(provider(rule, fetched))
        names.append(name)
    if len(names) == 1:
        requires = _provider_or_missing(names[0])
    else:
        inner = jwt_pb2.JwtRequirement(requires_all=jwt_pb2.JwtRequirementAndList(
            requirements=[_provider_or_missing(n) for n in names]))
        requires = jwt_pb2.JwtRequirement(requires_any=jwt_pb2.JwtRequirementOrList(
            requirements=[jwt_pb2.JwtRequirement(provider_name=n) for n in names] + [inner]))
    cfg.rules.add(match=rc.RouteMatch(prefix="/"), requires=requires)
    return cfg


def rules_for(ctx: ViewContext) -> list[JWTRule]:
    return ctx.once("jwt-rules", lambda: [rule for r in ctx.resolved.request_authentications_for(ctx.proxy)
                                          for rule in r.spec.jwt_rules])


class Jwt(Feature):
    name = NAME

    def patch_hcm(self, hcm: hcm_pb2.HttpConnectionManager, at: Chain, ctx: ViewContext) -> None:
        if not at.callee:
            return
        cfg = ctx.once("jwt-config", lambda: authentication(rules_for(ctx), ctx.snap.jwks))
        if cfg is not None:
            hcm.http_filters.append(hcm_pb2.HttpFilter(name=NAME, typed_config=pack(cfg)))


FEATURE = Jwt()
