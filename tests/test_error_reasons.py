"""One error vocabulary: the ErrorReason enum of boruta/v1/errors.proto, named by the
scheduler's exception classes and mapped by the client to its own; checked both ways and
over a real gRPC call."""

from __future__ import annotations

import inspect

import boruta_client.errors as client_errors
import boruta_scheduler.errors as server_errors
import grpc
import pytest
from boruta.reasons import ERROR_REASON_KEY, all_reasons, from_wire, wire_name
from boruta.v1.errors_pb2 import ErrorReason
from boruta_client import AsyncClient
from boruta_scheduler.rpc.status import status_of
from farm_kit import Farm


def _subclasses(module: object, base: type) -> list[type]:
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, base) and cls is not base and cls.__module__ == module.__name__  # type: ignore[attr-defined]
    ]


def test_every_reason_has_a_server_class_and_every_server_class_a_reason() -> None:
    classes = _subclasses(server_errors, server_errors.BorutaError)
    named = {cls.reason for cls in classes}
    assert ErrorReason.ERROR_REASON_UNSPECIFIED not in named
    assert named == set(all_reasons())
    # A subclass that shares its parent's reason must keep its parent's status code.
    for cls in classes:
        owner = next(c for c in cls.__mro__ if "reason" in vars(c))
        assert issubclass(cls, owner)


def test_every_reason_has_a_client_class_and_every_client_class_a_reason() -> None:
    assert set(client_errors.BY_REASON) == set(all_reasons())
    classes = set(_subclasses(client_errors, client_errors.BorutaError))
    mapped = set(client_errors.BY_REASON.values())
    assert len(mapped) == len(client_errors.BY_REASON), "two reasons share a client class"
    assert classes == mapped | client_errors.CLIENT_SIDE
    assert not mapped & client_errors.CLIENT_SIDE


def test_server_and_client_classes_agree_on_the_hierarchy() -> None:
    """A client that catches NotFound catches every reason the scheduler raises as one."""
    by_reason = {
        cls.reason: cls
        for cls in _subclasses(server_errors, server_errors.BorutaError)
        if "reason" in vars(cls)
    }
    for reason, server_cls in by_reason.items():
        client_cls = client_errors.BY_REASON[reason]
        for parent in server_cls.__mro__[1:]:
            if parent is not server_errors.BorutaError and "reason" in vars(parent):
                assert issubclass(client_cls, client_errors.BY_REASON[parent.reason]), (
                    server_cls,
                    parent,
                )


def test_wire_names_round_trip_and_unknown_names_fall_back() -> None:
    for reason in all_reasons():
        assert "ERROR_REASON" not in wire_name(reason)
        assert from_wire(wire_name(reason)) == reason
    for text in ("", "NOT_A_REASON", "UNSPECIFIED", "ERROR_REASON_BUSY", "busy"):
        assert from_wire(text) == ErrorReason.ERROR_REASON_UNSPECIFIED
        assert client_errors.for_reason(text) is None


async def test_a_scheduler_error_arrives_as_the_client_exception_of_its_reason(
    farm: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with AsyncClient(farm.address, user="alice") as alice:
        with pytest.raises(client_errors.RequestNotFound, match="request 4242 does not exist"):
            await alice.get_request(4242)
        with pytest.raises(client_errors.WorkerNotFound, match="is not registered"):
            await alice.get_worker("no-such-board")
        with pytest.raises(client_errors.NoSuchWorker):
            await alice.new_request({"board": "none-like-it"})
        with pytest.raises(client_errors.PermissionDenied):
            await alice.set_worker_groups("no-such-board", ["lab"])

        def bug(*args: object, **kwargs: object) -> object:
            raise RuntimeError("a bug")

        monkeypatch.setattr(farm.scheduler.service, "get_request", bug)  # type: ignore[attr-defined]
        with pytest.raises(client_errors.InternalError, match=r"internal error \(id "):
            await alice.get_request(1)


async def test_the_trailer_carries_the_reason_of_the_raised_class(farm: Farm) -> None:
    """What a client in another language sees: the code of the class and the enum's name."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await farm.client("alice").info(4242)
    trailer = dict(info.value.trailing_metadata() or ())
    assert trailer[ERROR_REASON_KEY] == "REQUEST_NOT_FOUND"
    assert info.value.code() is status_of(server_errors.RequestNotFound(4242))
