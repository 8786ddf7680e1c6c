"""Who may call what: one table of every RPC the scheduler serves, and the checks it names.

Each rule says which roles may make the call (checked once, before the call is served, by
`admit`), whose things it may touch (the owner rules below, which need the request or
worker and so run in the use cases, inside the engine where a race could matter), and
what the audit log records of it. tests/test_authz_matrix.py calls every RPC as every
kind of caller and expects exactly what the table says; docs/security.md shows the table
as `role_table()` writes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, TypeVar

from boruta_scheduler.core.policy import check_dial_address
from boruta_scheduler.errors import PermissionDenied, RequestNotFound, shown
from boruta_scheduler.listing import RequestQuery
from boruta_scheduler.types import Identity, RequestView, Role

if TYPE_CHECKING:
    from boruta_scheduler.core import Core

T = TypeVar("T")


class Scope(Enum):
    """Whose things a call may touch, beyond what its roles allow."""

    ANY = "any"
    OWN_REQUEST = "the request's owner (admins: any)"
    OWN_REQUESTS = "the caller's own requests (admins: all)"
    OWN_WORKER = "a board the dryad's certificate names"


class Recorded(Enum):
    """What the audit log records of a call that succeeds."""

    NOTHING = "nothing"
    CHANGE = "the change"
    ACCESS = "the access handed out"


class Refusal(Enum):
    """What becomes of a refused call: always a log line; an audit event too where said
    (callers who prove no identity are only logged, so nobody can fill the table from
    outside)."""

    RECORDED = "recorded"
    LOGGED = "logged"


PEOPLE = frozenset({Role.USER, Role.ADMIN})
ADMINS = frozenset({Role.ADMIN})
DRYADS = frozenset({Role.DRYAD})


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may make one call, whose things it may touch, and what the audit log keeps."""

    roles: frozenset[Role]
    # What the call does, for refusals: "only admins may <doing>".
    doing: str
    scope: Scope = Scope.ANY
    recorded: Recorded = Recorded.NOTHING
    refusal: Refusal = Refusal.RECORDED

    def refusal_message(self, who: Identity) -> str:
        allowed = " and ".join(f"{r.value}s" for r in Role if r in self.roles)
        return f"only {allowed} may {self.doing}; {who.user} is {_a(who.role)}"


def _a(role: Role) -> str:
    return f"an {role.value}" if role is Role.ADMIN else f"a {role.value}"


# Every RPC the scheduler serves, by service. A method missing here is not served.
RULES: Mapping[str, Mapping[str, Rule]] = {
    "boruta.v1.Requests": {
        "NewRequest": Rule(PEOPLE, "create requests", recorded=Recorded.CHANGE),
        "CloseRequest": Rule(PEOPLE, "close requests", Scope.OWN_REQUEST, recorded=Recorded.CHANGE),
        "UpdateRequest": Rule(
            PEOPLE, "update requests", Scope.OWN_REQUEST, recorded=Recorded.CHANGE
        ),
        "GetRequestInfo": Rule(PEOPLE, "read requests", Scope.OWN_REQUEST),
        "ListRequests": Rule(PEOPLE, "list requests", Scope.OWN_REQUESTS),
        "AcquireWorker": Rule(
            PEOPLE, "acquire workers", Scope.OWN_REQUEST, recorded=Recorded.ACCESS
        ),
        "ProlongAccess": Rule(
            PEOPLE, "prolong access", Scope.OWN_REQUEST, recorded=Recorded.CHANGE
        ),
        "WatchRequests": Rule(PEOPLE, "watch requests", Scope.OWN_REQUESTS),
        "GetUsage": Rule(PEOPLE, "read usage", Scope.OWN_REQUESTS),
    },
    "boruta.v1.Workers": {
        "ListWorkers": Rule(PEOPLE, "list workers"),
        "GetWorkerInfo": Rule(PEOPLE, "read workers"),
        "ListWorkerHistory": Rule(PEOPLE, "read a worker's history"),
        "SetState": Rule(ADMINS, "change a worker's state", recorded=Recorded.CHANGE),
        "SetGroups": Rule(ADMINS, "change a worker's groups", recorded=Recorded.CHANGE),
        "Deregister": Rule(ADMINS, "deregister a worker", recorded=Recorded.CHANGE),
        "WatchWorkers": Rule(PEOPLE, "watch workers"),
        "WhoAmI": Rule(PEOPLE, "ask who they are"),
        "CreateStack": Rule(ADMINS, "manage stacks", recorded=Recorded.CHANGE),
        "ListStacks": Rule(ADMINS, "manage stacks"),
        "DeleteStack": Rule(ADMINS, "manage stacks", recorded=Recorded.CHANGE),
        "ListAllocations": Rule(ADMINS, "list allocations"),
    },
    "boruta.v1.Superviser": {
        "Register": Rule(DRYADS, "register boards", Scope.OWN_WORKER),
        "Heartbeat": Rule(DRYADS, "send heartbeats", Scope.OWN_WORKER),
        "SetFail": Rule(DRYADS, "report failed boards", Scope.OWN_WORKER),
    },
    "boruta.v1.Tokens": {
        "IssueToken": Rule(ADMINS, "manage tokens", recorded=Recorded.CHANGE),
        "ListTokens": Rule(ADMINS, "manage tokens"),
        "RevokeToken": Rule(ADMINS, "manage tokens", recorded=Recorded.CHANGE),
    },
    "boruta.v1.Audit": {
        "ListAuditEvents": Rule(ADMINS, "read the audit log"),
    },
}

# Services of the API that the scheduler does not serve, and who may call them there.
SERVED_ELSEWHERE: Mapping[str, str] = {
    "boruta.v1.Dryad": "served by each dryad, to the scheduler's certificate only",
    "boruta.v1.Relay": "served by boruta-relay, on a Unix socket only the scheduler's user opens",
}


def rule_of(service: str, method: str) -> Rule:
    """The rule of one RPC; a method with none must not be served."""
    rule = RULES.get(service, {}).get(method)
    if rule is None:
        raise LookupError(
            f"{service}.{method} has no authorization rule; add one to RULES in app/authz.py"
        )
    return rule


def admit(who: Identity, rule: Rule) -> None:
    """Refuse a caller whose role the rule does not allow."""
    if who.role not in rule.roles:
        raise PermissionDenied(rule.refusal_message(who))


# ------------------------------------------------------------------ scope checks


def check_owner(who: Identity, view: RequestView) -> None:
    """Scope.OWN_REQUEST: only the request's owner and admins."""
    if who.role is not Role.ADMIN and view.owner != who.user:
        raise PermissionDenied(
            f"request {view.id} is not yours; only its owner and admins may see or change it"
        )


def as_owner(
    who: Identity, request_id: int, action: Callable[[Core, float], T]
) -> Callable[[Core, float], T]:
    """Scope.OWN_REQUEST for a change: the action as an engine command that first checks
    the caller owns the request, in order with every other command, so it sees every
    request created before it. (A check before queueing would miss one created in the
    same batch.)"""

    def command(core: Core, now: float) -> T:
        view = core.live_request(request_id)
        if view is not None:
            check_owner(who, view)
        return action(core, now)

    return command


def own_query(who: Identity, query: RequestQuery) -> RequestQuery:
    """Scope.OWN_REQUESTS: users list and watch their own requests only; admins everyone's."""
    if who.role is Role.ADMIN:
        return query
    if query.owners - {who.user}:
        raise PermissionDenied("you may list and watch only your own requests")
    return replace(query, owners=frozenset({who.user}))


def own_usage(who: Identity, owner: str) -> str:
    """Scope.OWN_REQUESTS for usage: the owner whose usage to sum ("": everyone's), which
    for a user is always themselves."""
    if who.role is Role.ADMIN:
        return owner
    if owner and owner != who.user:
        raise PermissionDenied(
            f"you may see only your own usage, not {shown(owner)}'s; leave owner empty"
        )
    return who.user


def check_dryad(who: Identity, uuid: str) -> None:
    """Scope.OWN_WORKER: a dryad speaks only for the workers its certificate names."""
    if not who.may_speak_for(uuid):
        if who.role is Role.DRYAD:
            raise PermissionDenied(
                f"dryad {who.user} may not speak for worker {shown(uuid)}: its certificate names "
                f"{', '.join(sorted(who.workers or ())) or 'no workers'}"
            )
        raise PermissionDenied(f"only dryads may call the Superviser service, not {who.user}")


def check_dryad_hosts(who: Identity, addresses: Mapping[str, str]) -> None:
    """Scope.OWN_WORKER at Register: the addresses a dryad advertises (by field name) are
    on hosts its certificate names. Else a stolen dryad certificate could aim users'
    tunnels (and the scheduler's calls) at any host the scheduler can reach, itself
    included."""
    for what, address in addresses.items():
        host = check_dial_address(address, what=what)[0]
        if who.hosts is not None and host not in who.hosts:
            raise PermissionDenied(
                f"{what} {shown(address)} is not on a host the dryad's certificate names "
                f"({', '.join(sorted(who.hosts)) or 'none'}); issue it with -H {shown(host)}"
            )


def check_id(request_id: int) -> None:
    """Ids are signed 64-bit in the store: a larger one names no request."""
    if not 0 < request_id < 2**63:
        raise RequestNotFound(request_id)


# -------------------------------------------------------------- the table shown


class Caller(Enum):
    """The kinds of caller the role table has a column for; "the user" owns the request
    the call names, "the board's dryad" speaks for the board it names."""

    ANONYMOUS = "anonymous"
    OWNER = "user"
    OTHER_USER = "another user"
    ADMIN = "admin"
    DRYAD = "the board's dryad"
    OTHER_DRYAD = "another dryad"


_ROLE_OF_CALLER = {
    Caller.OWNER: Role.USER,
    Caller.OTHER_USER: Role.USER,
    Caller.ADMIN: Role.ADMIN,
    Caller.DRYAD: Role.DRYAD,
    Caller.OTHER_DRYAD: Role.DRYAD,
}
_OUT_OF_SCOPE = {
    Scope.OWN_REQUEST: Caller.OTHER_USER,
    Scope.OWN_REQUESTS: Caller.OTHER_USER,
    Scope.OWN_WORKER: Caller.OTHER_DRYAD,
}


def allows(rule: Rule, caller: Caller) -> bool:
    """Whether the rule lets this kind of caller make the call (on the user's request,
    the board's worker)."""
    role = _ROLE_OF_CALLER.get(caller)
    return role in rule.roles and _OUT_OF_SCOPE.get(rule.scope) is not caller


def role_table() -> str:
    """The table of every RPC for docs/security.md, as Markdown."""
    header = [
        "call",
        *(c.value for c in Caller),
        "limited to",
        "audit log on success",
        "refusals",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for service, methods in RULES.items():
        for method, rule in methods.items():
            cells = [
                f"{service.rpartition('.')[2]}.{method}",
                *("yes" if allows(rule, c) else "no" for c in Caller),
                "" if rule.scope is Scope.ANY else rule.scope.value,
                rule.recorded.value,
                rule.refusal.value,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    for service, how in SERVED_ELSEWHERE.items():
        lines.append(f"| {service.rpartition('.')[2]}.* | {how} |")
    return "\n".join(lines) + "\n"
