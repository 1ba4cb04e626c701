"""ControlPlaneCore: the use-cases behind the REST API. No HTTP here: errors are InvalidConfig / NotFound.

`apply_async` is the REST API's apply: parsing and the validators (the EnvoyPatch check renders config and runs
`envoy --mode validate`) run in a worker thread, so the control plane's event loop keeps answering xDS and
pushing meanwhile; the conditional store write runs in a worker thread as well (a network round trip on etcd),
so store subscribers may run in any thread. `apply` is the same, synchronous, for embedded use and tests.

Every use-case takes the caller (`principal`, from `server.auth`; in-process callers default to admin): a
tenant's apply or delete is checked as a whole before anything is validated or written (one resource outside
its namespaces refuses all: `auth.Forbidden`), its reads are limited to its namespaces, and only a pod's own
credential (or an admin) registers or withdraws that pod's instance.
"""
from __future__ import annotations

import asyncio
import builtins
import json

from typing import Any, Callable, Iterable, Sequence

from ..api import DEFAULT_NAMESPACE, KINDS, InvalidConfig, Issue, Resource, ResourceKey, load_sources, resolve_kind
from ..api.kinds import SKIPPED_KINDS
from ..api.load import LoadResult, unwrap_list
from ..api.yamlload import YamlError, load_documents
from ..model.gateway_api import secret_granted
from ..model.types import Instance
from ..registry.base import Registry
from ..store.base import ConfigStore, NotFound, RevisionConflict
from .auth import (ADMIN_PRINCIPAL, POD, Forbidden, Principal, check_instance, check_namespace_read, check_writes,
                   readable, visible, why_unreadable)

# (resources being applied, every resource currently stored) -> problems; any problem rejects the apply
APPLY_ATTEMPTS = 5  # validate-and-write rounds when other replicas keep committing in between
Validator = Callable[[list[Resource], list[Resource]], list[Issue]]
# (file name, file text)
File = tuple[str, str]

# metadata the server owns: dropped on input so that re-applying `get -o yaml` output is a no-op
_SERVER_FIELDS = {"uid": None, "resource_version": None, "generation": None, "creation_timestamp": None}


def resource_dict(r: Resource) -> dict[str, Any]:
    """The REST form of a stored resource: canonical document + metadata.resourceVersion (store revision)."""
    d = r.to_dict()
    if r.revision:
        d["metadata"]["resourceVersion"] = str(r.revision)
    if r.kind == "Router":  # show what it stands for (`mizzen get router NAME -o yaml`)
        from ..model.router import expand

        d["status"] = {"generated": [g.to_dict() for g in expand(r)]}
    return d


def _strip_server_fields(r: Resource) -> Resource:
    meta = r.metadata.model_copy(update=_SERVER_FIELDS)
    return Resource(r.api_version, r.kind, meta, r.spec, r.revision)


def kind_name(name: str) -> str:
    """A kind as given by a client (Kind, plural or short name) -> the canonical Kind."""
    if name in KINDS:
        return name
    try:
        return resolve_kind(name).kind
    except KeyError:
        raise InvalidConfig([Issue(f"unknown kind {name!r} (known kinds: {', '.join(sorted(KINDS))})",
                                   "<request>", path="kind")]) from None


def _would(r: Resource, current: Resource | None) -> str:
    """What applying `r` over `current` would do (a dry run's answer), as the store reports it."""
    if current is None:
        return "created"
    same = json.dumps(r.to_dict(), sort_keys=True) == json.dumps(current.to_dict(), sort_keys=True)
    return "unchanged" if same else "configured"


def _key_dict(k: ResourceKey) -> dict[str, str]:
    return {"kind": k.kind, "namespace": k.namespace, "name": k.name}


class ControlPlaneCore:
    def __init__(self, store: ConfigStore, registry: Registry, validators: Iterable[Validator] = (),
                 advisors: Iterable[Validator] = ()):
        self.store = store
        self.registry = registry
        self.validators: list[Validator] = list(validators)
        # like validators, but what they find is a warning in the answer, never a refusal
        self.advisors: list[Validator] = list(advisors)

    # ------------------------------------------------------------------ config

    def parse(self, files: Sequence[File], namespace: str | None = None,
              skip_unknown: bool = False) -> tuple[list[Resource], list[Issue]]:
        """Parse and validate every file as one input. Returns (resources, warnings); raises InvalidConfig
        listing every problem in every file."""
        result = load_sources(files, default_namespace=namespace or DEFAULT_NAMESPACE, skip_unknown=skip_unknown)
        return [_strip_server_fields(r) for r in result.resources], result.warnings

    def apply(self, files: Sequence[File], namespace: str | None = None, *, dry_run: bool = False,
              skip_unknown: bool = False, principal: Principal = ADMIN_PRINCIPAL) -> dict[str, Any]:
        """All-or-nothing apply. `dry_run`: every check (the validators included), nothing stored; the answer
        says what would be done. `skip_unknown`: documents of unknown kinds are warnings, not errors.
        `principal`: who asks (a tenant may write only its namespaces)."""
        resources, warnings, origins = self._parsed(files, namespace, skip_unknown)
        check_writes(principal, resources, self.store.get)
        # validate against the store as it is, and write only over that same revision: another control-plane
        # replica may commit in between (e.g. a conflicting Router); then re-read and validate again
        for attempt in range(APPLY_ATTEMPTS):
            revision, current = self.store.revision, self.store.list()
            advice = self._check(resources, current, origins)
            if dry_run:
                return self._dry_run(resources, revision, warnings + advice)
            try:
                return self._applied(self.store.apply(resources, if_revision=revision), warnings + advice)
            except RevisionConflict:
                if attempt == APPLY_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def apply_async(self, files: Sequence[File], namespace: str | None = None, *, dry_run: bool = False,
                          skip_unknown: bool = False, principal: Principal = ADMIN_PRINCIPAL) -> dict[str, Any]:
        """`apply` for the event loop: parsing, validation and the conditional write in worker threads. A write
        that lands in between (another request, another replica) is caught by the
        conditional write, and the round is validated again."""
        resources, warnings, origins = await asyncio.to_thread(self._parsed, files, namespace, skip_unknown)
        check_writes(principal, resources, self.store.get)
        for attempt in range(APPLY_ATTEMPTS):
            revision, current = self.store.revision, self.store.list()
            advice = await asyncio.to_thread(self._check, resources, current, origins)
            if dry_run:
                return self._dry_run(resources, revision, warnings + advice)
            try:  # the write in a worker thread too: on etcd it is a network round trip
                result = await asyncio.to_thread(self.store.apply, resources, if_revision=revision)
                return self._applied(result, warnings + advice)
            except RevisionConflict:
                if attempt == APPLY_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _parsed(self, files: Sequence[File], namespace: str | None,
                skip_unknown: bool = False) -> tuple[list[Resource], list[Issue], LoadResult]:
        origins = load_sources(files, default_namespace=namespace or DEFAULT_NAMESPACE, skip_unknown=skip_unknown)
        resources, warnings = [_strip_server_fields(r) for r in origins.resources], origins.warnings
        if not resources:
            where = ", ".join(n for n, _ in files) or "<input>"
            raise InvalidConfig([Issue("no objects passed to apply", where), *warnings])
        return resources, warnings, origins

    def _check(self, resources: list[Resource], current: list[Resource],
               origins: LoadResult | None = None) -> list[Issue]:
        """Every validator sees the whole would-be config; any problem rejects the apply (blocking). Returns
        what the advisors say about it (warnings)."""
        issues = [i for v in self.validators for i in v(resources, current)]
        if issues:  # name the file and document, not `<apply>`
            raise InvalidConfig(origins.locate(issues) if origins is not None else issues)
        return [i for a in self.advisors for i in a(resources, current)]

    def _dry_run(self, resources: list[Resource], revision: int, warnings: list[Issue]) -> dict[str, Any]:
        """A dry run's answer: what applying would do to each resource; nothing stored."""
        return {"revision": revision, "dryRun": True,
                "applied": [{**_key_dict(r.key), "action": _would(r, self.store.get(r.key))} for r in resources],
                "warnings": [str(w) for w in warnings]}

    @staticmethod
    def _applied(result, warnings: list[Issue]) -> dict[str, Any]:
        return {
            "revision": result.revision,
            "applied": [{**_key_dict(r.key), "action": a} for r, a in result.actions],
            "warnings": [str(w) for w in warnings],
        }

    def _keys_from_files(self, files: Sequence[File], namespace: str | None) -> tuple[list[ResourceKey], list[Issue]]:
        """Lenient parse for delete: only kind, metadata.name and metadata.namespace matter, so a file that
        no longer validates (or was edited) can still be deleted."""
        ns = namespace or DEFAULT_NAMESPACE
        keys: list[ResourceKey] = []
        warnings: list[Issue] = []
        errors: list[Issue] = []
        for fname, text in files:
            try:  # the same reader as apply: bounded, YAML 1.2, duplicate keys refused
                docs = [d.value for d in load_documents(text)]
            except YamlError as e:
                errors.append(Issue(str(e), fname, e.document))
                continue
            for i, doc in enumerate(docs):
                if doc is None:
                    continue
                for d in unwrap_list(doc):
                    meta = d.get("metadata") if isinstance(d, dict) else None
                    if not isinstance(d, dict) or not isinstance(meta, dict) or not meta.get("name"):
                        errors.append(Issue("a document needs kind and metadata.name", fname, i))
                        continue
                    kind, name = d.get("kind"), str(meta["name"])
                    rns = str(meta.get("namespace") or ns)
                    if (d.get("apiVersion"), kind) in SKIPPED_KINDS:
                        warnings.append(Issue("skipped: not a Mizzen resource", fname, i, kind, rns, name))
                    elif kind not in KINDS:
                        errors.append(Issue(f"unknown kind {kind!r}", fname, i, kind, rns, name, "kind"))
                    else:
                        keys.append(ResourceKey(str(kind), rns, name))
        if errors:
            raise InvalidConfig(errors)
        return list(dict.fromkeys(keys)), warnings

    def delete_files(self, files: Sequence[File], namespace: str | None = None, *,
                     principal: Principal = ADMIN_PRINCIPAL) -> dict[str, Any]:
        keys, warnings = self._keys_from_files(files, namespace)
        if not keys:
            where = ", ".join(n for n, _ in files) or "<input>"
            raise InvalidConfig([Issue("no objects passed to delete", where), *warnings])
        check_writes(principal, keys)
        revision = self.store.delete(keys)
        return {"revision": revision, "deleted": [_key_dict(k) for k in keys],
                "warnings": [str(w) for w in warnings]}

    def delete(self, kind: str, namespace: str, name: str, *,
               principal: Principal = ADMIN_PRINCIPAL) -> dict[str, Any]:
        key = ResourceKey(kind_name(kind), namespace, name)
        check_writes(principal, [key])
        revision = self.store.delete([key])
        return {"revision": revision}

    def list(self, kind: str | None = None, namespace: str | None = None, *,
             principal: Principal = ADMIN_PRINCIPAL) -> builtins.list[dict[str, Any]]:
        """Stored resources (of a kind, in a namespace); a tenant sees those of its namespaces only, a pod's app
        what routes its calls (`auth.readable`)."""
        check_namespace_read(principal, namespace or None)
        items = self.store.list(kind_name(kind) if kind else None, namespace or None)
        return [resource_dict(r) for r in items if readable(principal, r)]

    def get(self, kind: str, namespace: str, name: str, *, principal: Principal = ADMIN_PRINCIPAL) -> dict[str, Any]:
        key = ResourceKey(kind_name(kind), namespace, name)
        gateway_secret = self._gateway_reads_secret(principal, key)
        if not gateway_secret:
            check_namespace_read(principal, namespace)
        r = self.store.get(key)
        if r is None:
            raise NotFound([key])
        if not gateway_secret and not readable(principal, r):
            raise Forbidden(why_unreadable(principal, r))
        return resource_dict(r)

    def _gateway_reads_secret(self, p: Principal, key: ResourceKey) -> bool:
        """A gateway pod's agent may read the Secrets of its own namespace: its Gateways' credentialName, served
        to its Envoy over SDS (docs/gateway.md); and a Secret of another namespace whose ReferenceGrant lets
        Gateways of the pod's namespace use it (a Gateway API certificateRef). Only a pod whose Workload is
        stored with `gateway: true`."""
        if p.pod is None or p.role != POD or key.kind != "Secret":
            return False
        if key.namespace != p.pod.namespace and not secret_granted(
                self.store.list("ReferenceGrant", key.namespace), p.pod.namespace, key.namespace, key.name):
            return False
        wl = self.store.get(ResourceKey("Workload", p.pod.namespace, p.pod.workload))
        return wl is not None and bool(getattr(wl.spec, "gateway", False))

    @property
    def revision(self) -> int:
        return self.store.revision

    # ------------------------------------------------------------------ registry

    def upsert_instance(self, data: dict[str, Any], id: str | None = None, *,
                        principal: Principal = ADMIN_PRINCIPAL) -> bool:
        """Register or refresh an instance from its `Instance.to_dict()` form. `id`, when given (the URL's),
        must match the body's id (or fills it in). Returns True if anything changed. Only an admin or the
        pod's own credential (id, namespace, workload, service account as bound) may."""
        if not isinstance(data, dict):
            raise InvalidConfig([Issue("an instance must be a JSON object", "<request>")])
        body = dict(data)
        if id is not None:
            body.setdefault("id", id)
            if str(body["id"]) != id:
                raise InvalidConfig([Issue(f"instance id {body['id']!r} does not match the URL's {id!r}",
                                           "<request>", path="id")])
        check_instance(principal, str(body.get("id")), body)
        try:
            inst = Instance.from_dict(body)
        except KeyError as e:
            raise InvalidConfig([Issue("required field is missing", "<request>", path=str(e.args[0]))]) from None
        except (TypeError, ValueError, AttributeError, OverflowError) as e:  # e.g. ports: [Infinity]
            raise InvalidConfig([Issue(f"invalid instance: {str(e)[:200]}", "<request>")]) from None
        if not inst.id or not inst.address:
            raise InvalidConfig([Issue("id and address must not be empty", "<request>")])
        return self.registry.upsert(inst)

    def remove_instance(self, id: str, *, principal: Principal = ADMIN_PRINCIPAL) -> bool:
        """Withdraw an instance; idempotent (returns False if it was not registered)."""
        check_instance(principal, id)
        return self.registry.remove(id)

    def instances(self, *, principal: Principal = ADMIN_PRINCIPAL) -> builtins.list[dict[str, Any]]:
        """Registered instances; a tenant sees those of its namespaces only."""
        return [dict(i) for i in visible(principal, [i.to_dict() for i in self.registry.list()])]
