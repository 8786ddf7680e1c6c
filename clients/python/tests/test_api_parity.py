"""The blocking API and the asyncio API are the same API: every public method, property and
attribute of each async class has its blocking twin with the same signature, where the
blocking one returns what the coroutine returns (AsyncX -> X, async iterators -> iterators)."""

from __future__ import annotations

import inspect
import re
from typing import Any

import pytest
from boruta_client import (
    AsyncBoard,
    AsyncBoards,
    AsyncBoardsLease,
    AsyncBoardSSH,
    AsyncClient,
    AsyncLease,
    AsyncWatch,
    Board,
    Boards,
    BoardsLease,
    BoardSSH,
    Client,
    Lease,
    Watch,
)

PAIRS = [
    (Client, AsyncClient),
    (Lease, AsyncLease),
    (Board, AsyncBoard),
    (Watch, AsyncWatch),
    (BoardsLease, AsyncBoardsLease),
    (Boards, AsyncBoards),
]
# The async protocol methods and their blocking twins.
TWINS = {"__aenter__": "__enter__", "__aexit__": "__exit__", "__aiter__": "__iter__"}
# Facades are made by their client, so only the clients' constructors must agree.
CONSTRUCTED_BY_USERS = {Client, AsyncClient}


def blocking_spelling(text: str) -> str:
    """An async annotation as its blocking twin reads it."""
    return re.sub(r"\bAsync(?=[A-Z])", "", text)


def compared(cls: type, name: str) -> bool:
    """Public names, the protocol methods and a client's constructor."""
    if name == "__init__":
        return cls in CONSTRUCTED_BY_USERS
    return not name.startswith("_") or name in TWINS or name in TWINS.values()


def members(cls: type) -> dict[str, tuple[str, str]]:
    """Public name -> (kind, signature or type) of a class, blocking-spelt if async."""
    found: dict[str, tuple[str, str]] = {}
    for klass in reversed(cls.__mro__[:-1]):
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if not name.startswith("_"):
                found[name] = ("value", blocking_spelling(str(annotation)))
    for name in dir(cls):
        if not compared(cls, name):
            continue
        member = inspect.getattr_static(cls, name)
        if isinstance(member, property):
            returns = inspect.signature(member.fget).return_annotation  # type: ignore[arg-type]
            found[name] = ("value", blocking_spelling(str(returns)))
            continue
        attribute = getattr(cls, name)
        if not callable(attribute) or getattr(attribute, "__objclass__", None) is object:
            continue
        raw = inspect.unwrap(attribute)
        kind = "method"
        if inspect.iscoroutinefunction(attribute) or inspect.isasyncgenfunction(raw):
            kind = "coroutine"
        found[TWINS.get(name, name)] = (kind, blocking_spelling(str(inspect.signature(raw))))
    return found


def differences(blocking: type, asynchronous: type) -> list[str]:
    """How the blocking class differs from the async one; empty when they agree."""
    mine, theirs = members(blocking), members(asynchronous)
    found = [f"{blocking.__name__} lacks {n}" for n in sorted(set(theirs) - set(mine))]
    found += [f"{asynchronous.__name__} lacks {n}" for n in sorted(set(mine) - set(theirs))]
    for name in sorted(set(mine) & set(theirs)):
        (kind, shape), (async_kind, async_shape) = mine[name], theirs[name]
        if kind == "coroutine":
            found.append(f"{blocking.__name__}.{name} is a coroutine")
        elif (async_kind == "method" and kind != "method") or async_kind == "value" != kind:
            found.append(f"{name}: {kind} here, {async_kind} in {asynchronous.__name__}")
        if shape != async_shape:
            found.append(f"{name}: {shape} here, {async_shape} in {asynchronous.__name__}")
    return found


@pytest.mark.parametrize(("blocking", "asynchronous"), PAIRS, ids=lambda c: c.__name__)
def test_blocking_and_async_classes_have_one_api(blocking: type, asynchronous: type) -> None:
    assert differences(blocking, asynchronous) == []
    assert members(asynchronous)  # the walk found something to compare


def test_the_async_methods_are_coroutines() -> None:
    kinds = members(AsyncClient)
    assert kinds["new_request"][0] == kinds["watch_requests"][0] == "coroutine"
    assert kinds["lease"][0] == "method" and members(Client)["new_request"][0] == "method"
    assert "issue_token" in kinds and "attach" in kinds and "audit_events" in kinds


def test_instance_attributes_are_declared_so_the_walk_sees_them() -> None:
    clients: list[Any] = [AsyncClient("127.0.0.1:1", user="u"), Client("127.0.0.1:1", user="u")]
    try:
        for client in clients:
            public = {n for n in vars(client) if not n.startswith("_")}
            assert public and public <= set(members(type(client)))
        lease = clients[1].lease({"board": "x"})
        assert {n for n in vars(lease._inner) if not n.startswith("_")} <= set(members(Lease))
    finally:
        clients[1].close()


def test_the_walk_catches_what_drifted() -> None:
    class Slow:
        def fetch(self, n: int) -> int: ...
        def gone(self) -> None: ...
        async def hurried(self) -> None: ...

    class AsyncSlow:
        async def fetch(self, n: int, *, more: bool = False) -> int: ...
        def hurried(self) -> None: ...
        async def added(self) -> AsyncSlow: ...

    assert differences(Slow, AsyncSlow) == [
        "Slow lacks added",
        "AsyncSlow lacks gone",
        "fetch: (self, n: 'int') -> 'int' here, "
        "(self, n: 'int', *, more: 'bool' = False) -> 'int' in AsyncSlow",
        "Slow.hurried is a coroutine",
    ]


def test_ssh_differs_only_in_the_paramiko_objects() -> None:
    """AsyncBoardSSH runs BoardSSH's operations in threads; the paramiko objects and the
    interactive shell are BoardSSH's only (reach them through AsyncBoardSSH.sync)."""
    blocking_only = {"transport", "sftp", "shell", "forward", "__enter__", "__exit__"}
    mine, theirs = members(BoardSSH), members(AsyncBoardSSH)
    assert set(mine) - set(theirs) == blocking_only
    assert set(theirs) - set(mine) == {"sync"}
    for name in ("run", "put", "get", "close"):
        assert theirs[name][0] == "coroutine"
        if name != "close":
            assert theirs[name][1] == mine[name][1], name
