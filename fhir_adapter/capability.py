"""What the FHIR API supports, as data: the registry that `GET /fhir/metadata` turns into the
CapabilityStatement, so that what the statement says and what the server does cannot drift.

Two steps, one source of truth:

* **the plan** (`plan_resource`, `plan_operation`, `plan_system`; the platform's is in
  `supported.py`) is every capability the platform means to offer, with what a client needs to
  know: the search parameters and their types and definitions, the operations and theirs;
* **the handlers** declare, next to their routes, which of those they serve
  (`supported.CAPABILITIES.serve("Patient", Interaction.READ)`). Only what is served is published: a
  planned capability without a handler stays out of the statement. Serving something that is
  not planned is an error at import, so the plan stays the whole list.

Each capability knows the HTTP request that carries it (`Route`), and a test checks that the
application has a route for every served one, and that every FHIR route is a served one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from importlib.metadata import PackageNotFoundError, version
from typing import Any

FHIR_VERSION = "4.0.1"
SMART_OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
RESTFUL_SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"


class Interaction(StrEnum):
    """Type and instance interactions (R4 type-restful-interaction), plus the two
    conditional forms, which the statement carries as flags rather than interactions."""

    READ = "read"
    VREAD = "vread"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    HISTORY_INSTANCE = "history-instance"
    HISTORY_TYPE = "history-type"
    CREATE = "create"
    SEARCH_TYPE = "search-type"
    CONDITIONAL_CREATE = "conditional-create"
    CONDITIONAL_UPDATE = "conditional-update"


class SystemInteraction(StrEnum):
    """Whole-system interactions (R4 system-restful-interaction)."""

    TRANSACTION = "transaction"
    BATCH = "batch"
    SEARCH_SYSTEM = "search-system"
    HISTORY_SYSTEM = "history-system"


class SearchParamType(StrEnum):
    NUMBER = "number"
    DATE = "date"
    STRING = "string"
    TOKEN = "token"
    REFERENCE = "reference"
    COMPOSITE = "composite"
    QUANTITY = "quantity"
    URI = "uri"
    SPECIAL = "special"


class OperationLevel(StrEnum):
    SYSTEM = "system"  # [base]/$op
    TYPE = "type"  # [base]/Patient/$op
    INSTANCE = "instance"  # [base]/Patient/123/$op


@dataclass(frozen=True)
class SearchParam:
    """A search parameter: its name, type and the SearchParameter that defines it."""

    name: str
    type: SearchParamType
    definition: str
    documentation: str | None = None


@dataclass(frozen=True)
class Operation:
    """An operation. `resource_type` None at TYPE level: on every listed resource type."""

    name: str  # without the "$"
    definition: str
    level: OperationLevel
    resource_type: str | None = None
    method: str = "POST"
    documentation: str | None = None

    @property
    def key(self) -> tuple[str, str | None]:
        return (self.name, self.resource_type)


@dataclass(frozen=True)
class Route:
    """The HTTP request that carries a capability, with a concrete example path (what a
    client would send), so that a test can ask the application's router whether it is served."""

    method: str
    path: str
    capability: str


@dataclass
class _Resource:
    resource_type: str
    interactions: set[Interaction]
    search_params: dict[str, SearchParam]
    includes: list[str]
    documentation: str | None
    revincludes: list[str] = field(default_factory=list)
    served: set[Interaction] = field(default_factory=set)
    served_params: set[str] = field(default_factory=set)
    served_includes: set[str] = field(default_factory=set)
    served_revincludes: set[str] = field(default_factory=set)


class CapabilityRegistry:
    """The plan and what is served of it; renders the CapabilityStatement."""

    def __init__(self) -> None:
        self._resources: dict[str, _Resource] = {}
        self._system: set[SystemInteraction] = set()
        self._served_system: set[SystemInteraction] = set()
        self._operations: dict[tuple[str, str | None], Operation] = {}
        self._served_operations: set[tuple[str, str | None]] = set()

    # --- the plan --------------------------------------------------------------------------

    def plan_resource(
        self,
        resource_type: str,
        interactions: Iterable[Interaction] = (),
        *,
        search_params: Iterable[SearchParam] = (),
        includes: Iterable[str] = (),
        revincludes: Iterable[str] = (),
        documentation: str | None = None,
    ) -> None:
        """Plan support for a resource type (its interactions, search parameters, includes
        and reverse includes)."""
        planned = set(interactions)
        params = {param.name: param for param in search_params}
        if params and Interaction.SEARCH_TYPE not in planned:
            raise ValueError(f"{resource_type}: search parameters without search-type")
        self._resources[resource_type] = _Resource(
            resource_type, planned, params, list(includes), documentation, list(revincludes)
        )

    def plan_system(self, *interactions: SystemInteraction) -> None:
        """Plan whole-system interactions (transaction, batch)."""
        self._system.update(interactions)

    def plan_operation(self, operation: Operation) -> None:
        """Plan an operation at system, type or instance level."""
        self._operations[operation.key] = operation

    # --- what the handlers serve -----------------------------------------------------------

    def serve(
        self,
        resource_type: str,
        *interactions: Interaction,
        search_params: Iterable[str] | None = None,
        includes: Iterable[str] = (),
        revincludes: Iterable[str] = (),
    ) -> None:
        """Declare, next to the routes, that these planned interactions are served. For
        search-type, `search_params` names the parameters served (default: all planned),
        `includes` and `revincludes` the `_include` and `_revinclude` values."""
        resource = self._resources.get(resource_type)
        if resource is None:
            raise ValueError(f"{resource_type} is not in the plan (capability._plan)")
        unplanned = set(interactions) - resource.interactions
        if unplanned:
            raise ValueError(f"{resource_type}: {sorted(unplanned)} not in the plan")
        resource.served.update(interactions)
        if Interaction.SEARCH_TYPE in interactions:
            names = set(resource.search_params if search_params is None else search_params)
            unknown = names - set(resource.search_params)
            if unknown:
                raise ValueError(
                    f"{resource_type}: search parameters {sorted(unknown)} not planned"
                )
            resource.served_params.update(names)
        unknown_includes = set(includes) - set(resource.includes)
        if unknown_includes:
            raise ValueError(f"{resource_type}: _include {sorted(unknown_includes)} not planned")
        resource.served_includes.update(includes)
        unknown_revincludes = set(revincludes) - set(resource.revincludes)
        if unknown_revincludes:
            raise ValueError(
                f"{resource_type}: _revinclude {sorted(unknown_revincludes)} not planned"
            )
        resource.served_revincludes.update(revincludes)

    def serve_system(self, *interactions: SystemInteraction) -> None:
        """Declare that these planned whole-system interactions are served."""
        unplanned = set(interactions) - self._system
        if unplanned:
            raise ValueError(f"{sorted(unplanned)} not in the plan")
        self._served_system.update(interactions)

    def serve_operation(self, name: str, resource_type: str | None = None) -> None:
        """Declare that a planned operation is served."""
        if (name, resource_type) not in self._operations:
            raise ValueError(f"${name} on {resource_type or 'the system'} is not in the plan")
        self._served_operations.add((name, resource_type))

    # --- reading it ------------------------------------------------------------------------

    def served_routes(self) -> list[Route]:
        """The HTTP request behind every served capability (for the no-drift test)."""
        routes: list[Route] = []
        for resource in self._resources.values():
            for interaction in sorted(resource.served):
                method, path = _INTERACTION_ROUTES[interaction]
                routes.append(
                    Route(method, path.format(type=resource.resource_type), interaction.value)
                )
                for method, path in _MORE_ROUTES.get(interaction, ()):
                    routes.append(
                        Route(method, path.format(type=resource.resource_type), interaction.value)
                    )
        for system in sorted(self._served_system):
            method, path = _SYSTEM_ROUTES[system]
            routes.append(Route(method, path, system.value))
        for key in sorted(self._served_operations, key=lambda key: (key[0], key[1] or "")):
            operation = self._operations[key]
            for resource_type in self._operation_types(operation):
                routes.append(_operation_route(operation, resource_type))
        return routes

    def planned_not_served(self) -> list[str]:
        """What the plan promises that no handler serves yet, e.g. `Patient read`."""
        missing = [
            f"{resource.resource_type} {interaction.value}"
            for resource in self._resources.values()
            for interaction in sorted(resource.interactions - resource.served)
        ]
        missing += [
            f"system {system.value}" for system in sorted(self._system - self._served_system)
        ]
        for key in sorted(
            set(self._operations) - self._served_operations, key=lambda key: (key[0], key[1] or "")
        ):
            operation = self._operations[key]
            where = (
                "system"
                if operation.level is OperationLevel.SYSTEM
                else operation.resource_type or "every type"
            )
            missing.append(f"${operation.name} on {where}")
        return missing

    def statement(self, *, public_base_url: str, date: datetime) -> dict[str, Any]:
        """The CapabilityStatement (R4 JSON) of what is served, for `GET /fhir/metadata`."""
        base = public_base_url.rstrip("/")
        rest: dict[str, Any] = {
            "mode": "server",
            "documentation": (
                "FHIR R4 API for gene-therapy treatment centers: long-term follow-up patients, "
                "infusions, visits and outcomes. JSON only."
            ),
            "security": _security(base),
        }
        resources = [
            entry
            for resource in self._resources.values()
            if (entry := self._resource_entry(resource))
        ]
        if resources:
            rest["resource"] = resources
        interactions = [{"code": system.value} for system in sorted(self._served_system)]
        if interactions:
            rest["interaction"] = interactions
        system_operations = [
            _operation_entry(self._operations[key])
            for key in sorted(self._served_operations, key=lambda key: (key[0], key[1] or ""))
            if self._operations[key].level is OperationLevel.SYSTEM
        ]
        if system_operations:
            rest["operation"] = system_operations
        return {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": date.isoformat(timespec="seconds"),
            "publisher": "cgt-access",
            "kind": "instance",
            "software": {"name": "cgt-access", "version": _software_version()},
            "implementation": {
                "description": "cgt-access FHIR R4 API for treatment centers",
                "url": f"{base}/fhir",
            },
            "fhirVersion": FHIR_VERSION,
            "format": ["json"],
            "rest": [rest],
        }

    def _operation_types(self, operation: Operation) -> list[str | None]:
        if operation.level is OperationLevel.SYSTEM:
            return [None]
        if operation.resource_type is not None:
            return [operation.resource_type]
        return list(self._resources)

    def _resource_entry(self, resource: _Resource) -> dict[str, Any] | None:
        operations = [
            _operation_entry(operation)
            for key, operation in sorted(self._operations.items(), key=lambda item: item[0][0])
            if key in self._served_operations
            and operation.level is not OperationLevel.SYSTEM
            and operation.resource_type in (None, resource.resource_type)
        ]
        if not resource.served and not operations:
            return None
        entry: dict[str, Any] = {
            "type": resource.resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource.resource_type}",
        }
        if resource.documentation:
            entry["documentation"] = resource.documentation
        codes = [
            {"code": interaction.value}
            for interaction in Interaction
            if interaction in resource.served and interaction not in _FLAGS
        ]
        if codes:
            entry["interaction"] = codes
        if Interaction.CONDITIONAL_CREATE in resource.served:
            entry["conditionalCreate"] = True
        if Interaction.CONDITIONAL_UPDATE in resource.served:
            entry["conditionalUpdate"] = True
        if resource.served_includes:
            entry["searchInclude"] = [
                name for name in resource.includes if name in resource.served_includes
            ]
        if resource.served_revincludes:
            entry["searchRevInclude"] = [
                name for name in resource.revincludes if name in resource.served_revincludes
            ]
        params = [
            _search_param_entry(param)
            for name, param in resource.search_params.items()
            if name in resource.served_params
        ]
        if params:
            entry["searchParam"] = params
        if operations:
            entry["operation"] = operations
        return entry


_FLAGS = frozenset({Interaction.CONDITIONAL_CREATE, Interaction.CONDITIONAL_UPDATE})
# The request of each interaction (R4 http.html); {type} is the resource type.
_INTERACTION_ROUTES: dict[Interaction, tuple[str, str]] = {
    Interaction.READ: ("GET", "/fhir/{type}/12345"),
    Interaction.VREAD: ("GET", "/fhir/{type}/12345/_history/1"),
    Interaction.UPDATE: ("PUT", "/fhir/{type}/12345"),
    Interaction.PATCH: ("PATCH", "/fhir/{type}/12345"),
    Interaction.DELETE: ("DELETE", "/fhir/{type}/12345"),
    Interaction.HISTORY_INSTANCE: ("GET", "/fhir/{type}/12345/_history"),
    Interaction.HISTORY_TYPE: ("GET", "/fhir/{type}/_history"),
    Interaction.CREATE: ("POST", "/fhir/{type}"),
    Interaction.SEARCH_TYPE: ("GET", "/fhir/{type}"),
    Interaction.CONDITIONAL_CREATE: ("POST", "/fhir/{type}"),
    Interaction.CONDITIONAL_UPDATE: ("PUT", "/fhir/{type}"),
}
# Interactions that more than one request carries: search-type also as a form POST.
_MORE_ROUTES: dict[Interaction, tuple[tuple[str, str], ...]] = {
    Interaction.SEARCH_TYPE: (("POST", "/fhir/{type}/_search"),),
}
_SYSTEM_ROUTES: dict[SystemInteraction, tuple[str, str]] = {
    SystemInteraction.TRANSACTION: ("POST", "/fhir"),
    SystemInteraction.BATCH: ("POST", "/fhir"),
    SystemInteraction.SEARCH_SYSTEM: ("GET", "/fhir"),
    SystemInteraction.HISTORY_SYSTEM: ("GET", "/fhir/_history"),
}


def _operation_route(operation: Operation, resource_type: str | None) -> Route:
    if operation.level is OperationLevel.SYSTEM:
        path = f"/fhir/${operation.name}"
    elif operation.level is OperationLevel.TYPE:
        path = f"/fhir/{resource_type}/${operation.name}"
    else:
        path = f"/fhir/{resource_type}/12345/${operation.name}"
    return Route(operation.method, path, f"${operation.name}")


def _operation_entry(operation: Operation) -> dict[str, Any]:
    entry = {"name": operation.name, "definition": operation.definition}
    if operation.documentation:
        entry["documentation"] = operation.documentation
    return entry


def _search_param_entry(param: SearchParam) -> dict[str, Any]:
    entry = {"name": param.name, "definition": param.definition, "type": param.type.value}
    if param.documentation:
        entry["documentation"] = param.documentation
    return entry


def _security(base: str) -> dict[str, Any]:
    return {
        "cors": False,
        "extension": [
            {
                "url": SMART_OAUTH_URIS,
                "extension": [{"url": "token", "valueUri": f"{base}/auth/token"}],
            }
        ],
        "service": [
            {
                "coding": [
                    {
                        "system": RESTFUL_SECURITY_SERVICE,
                        "code": "SMART-on-FHIR",
                        "display": "SMART-on-FHIR",
                    }
                ],
                "text": "SMART Backend Services (OAuth 2.0 client credentials, signed JWT)",
            }
        ],
        "description": (
            "Each treatment center's system authenticates with SMART Backend Services: a "
            "signed JWT assertion exchanged at the token endpoint for a bearer token with "
            "system/ scopes. Every request except GET /fhir/metadata needs the token."
        ),
    }


def _software_version() -> str:
    try:
        return version("cgt-access")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+source"
