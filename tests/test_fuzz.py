"""Fuzzing a running scheduler: generated, malformed and oversized messages to every RPC.
The scheduler never crashes, answers only with the codes that mean "bad input" (or OK for
input that happens to be valid), and a call that fails leaves the state exactly as it was."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from boruta.v1 import (
    audit_pb2,
    requests_pb2,
    superviser_pb2,
    tokens_pb2,
    types_pb2,
    workers_pb2,
)
from farm_kit import SchedulerProcess
from google.protobuf import descriptor as pbd
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SERVICES = [
    requests_pb2.DESCRIPTOR.services_by_name["Requests"],
    workers_pb2.DESCRIPTOR.services_by_name["Workers"],
    superviser_pb2.DESCRIPTOR.services_by_name["Superviser"],
    tokens_pb2.DESCRIPTOR.services_by_name["Tokens"],
    audit_pb2.DESCRIPTOR.services_by_name["Audit"],
]
METHODS = [m for s in SERVICES for m in s.methods]
# What a refused input may be answered with. UNKNOWN or INTERNAL would mean a crash.
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.DEADLINE_EXCEEDED,  # AcquireWorker and watches wait; the call's own limit
}
ADMIN = (("x-boruta-user", "root"), ("x-boruta-role", "admin"))
CALLERS = st.sampled_from(
    [
        (("x-boruta-user", "alice"),),
        (("x-boruta-user", "bob"), ("x-boruta-groups", "lab")),
        ADMIN,
        (("x-boruta-user", "pc"), ("x-boruta-role", "dryad")),
        (),
    ]
)
TEXT = st.one_of(st.text(max_size=40), st.text(max_size=3000), st.sampled_from(["", "w1", "*"]))
INT64 = st.integers(min_value=0, max_value=2**63 - 1)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, grpc.Channel]]:
    process = SchedulerProcess(
        tmp_path_factory.mktemp("fuzz"), "--heartbeat-timeout", "1h", "--healthcheck-interval", "0"
    )
    address = process.start()
    channel = grpc.insecure_channel(address)
    # Something to aim at: a worker (in MAINTENANCE, no dryad behind it) and requests.
    register = channel.unary_unary(
        "/boruta.v1.Superviser/Register",
        request_serializer=superviser_pb2.RegisterRequest.SerializeToString,
        response_deserializer=superviser_pb2.RegisterResponse.FromString,
    )
    register(
        superviser_pb2.RegisterRequest(
            caps={"UUID": "w1", "board": "rpi4"},
            dryad_address="127.0.0.1:9",
            ssh_address="127.0.0.1:22",
            instance_id="i1",
        ),
        metadata=(("x-boruta-role", "dryad"),),
    )
    new = channel.unary_unary(
        "/boruta.v1.Requests/NewRequest",
        request_serializer=requests_pb2.NewRequestRequest.SerializeToString,
        response_deserializer=requests_pb2.NewRequestResponse.FromString,
    )
    for owner in ("alice", "bob"):
        new(
            requests_pb2.NewRequestRequest(caps={"board": "rpi4"}),
            metadata=(("x-boruta-user", owner),),
        )
    yield address, channel
    channel.close()
    assert process.proc is not None and process.proc.poll() is None, "the scheduler died"
    assert process.stop() == 0


def snapshot(channel: grpc.Channel) -> tuple[bytes, bytes]:
    """Every request and every worker, as an admin sees them (heartbeat times aside)."""
    requests = channel.unary_unary(
        "/boruta.v1.Requests/ListRequests",
        request_serializer=requests_pb2.ListRequestsRequest.SerializeToString,
        response_deserializer=requests_pb2.ListRequestsResponse.FromString,
    )(requests_pb2.ListRequestsRequest(page_size=1000), metadata=ADMIN, timeout=10)
    workers = channel.unary_unary(
        "/boruta.v1.Workers/ListWorkers",
        request_serializer=workers_pb2.ListWorkersRequest.SerializeToString,
        response_deserializer=workers_pb2.ListWorkersResponse.FromString,
    )(workers_pb2.ListWorkersRequest(), metadata=ADMIN, timeout=10)
    for worker in workers.workers:
        worker.ClearField("last_seen")
        worker.ClearField("host_status")
    return requests.SerializeToString(deterministic=True), workers.SerializeToString(
        deterministic=True
    )


def call_raw(
    channel: grpc.Channel,
    method: pbd.MethodDescriptor,
    payload: bytes,
    who: Any,
    timeout: float = 2,
    stream_timeout: float = 0.3,
) -> grpc.StatusCode:
    """Send bytes as the request message of a method; return how the call ended."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(payload, metadata=who, timeout=stream_timeout)
            for _ in stream:
                pass
        else:
            channel.unary_unary(path)(payload, metadata=who, timeout=timeout)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def field_values(field: pbd.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == pbd.FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    if field.type == pbd.FieldDescriptor.TYPE_STRING:
        return TEXT
    if field.type == pbd.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == pbd.FieldDescriptor.TYPE_ENUM:
        return st.integers(min_value=-5, max_value=40)  # unknown values included
    if field.type in (pbd.FieldDescriptor.TYPE_UINT32,):
        return st.integers(min_value=0, max_value=2**32 - 1)
    if field.type in (pbd.FieldDescriptor.TYPE_UINT64,):
        return st.integers(min_value=0, max_value=2**64 - 1)
    if field.type in (pbd.FieldDescriptor.TYPE_INT32,):
        return st.integers(min_value=-(2**31), max_value=2**31 - 1)
    if field.type in (pbd.FieldDescriptor.TYPE_INT64,):
        return st.integers(min_value=-(2**63), max_value=2**63 - 1)
    if field.type == pbd.FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True)
    return st.nothing()


@st.composite
def _message(draw: st.DrawFn, desc: pbd.Descriptor, depth: int) -> bytes:
    cls = message_class(desc)
    message = cls()
    for field in desc.fields:
        if not draw(st.booleans()):
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entries = draw(st.dictionaries(TEXT, TEXT, max_size=40))
            getattr(message, field.name).update(entries)
        elif field.is_repeated:
            values = draw(st.lists(field_values(field, depth), max_size=5))
            target = getattr(message, field.name)
            for value in values:
                if field.type == pbd.FieldDescriptor.TYPE_MESSAGE:
                    target.add().MergeFromString(value)
                else:
                    target.append(value)
        elif field.type == pbd.FieldDescriptor.TYPE_MESSAGE:
            getattr(message, field.name).MergeFromString(draw(field_values(field, depth)))
        else:
            setattr(message, field.name, draw(field_values(field, depth)))
    return message.SerializeToString()


def messages(desc: pbd.Descriptor, depth: int = 0) -> st.SearchStrategy[bytes]:
    if depth > 3:
        return st.just(b"")
    return _message(desc, depth)


def message_class(desc: pbd.Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


def check(channel: grpc.Channel, method: pbd.MethodDescriptor, payload: bytes, who: Any) -> None:
    before = snapshot(channel)
    code = call_raw(channel, method, payload, who)
    assert code is grpc.StatusCode.OK or code in REFUSALS, (method.full_name, code)
    if code is not grpc.StatusCode.OK:
        assert snapshot(channel) == before, (
            f"{method.full_name} failed with {code} yet changed the state"
        )


FUZZ = settings(
    max_examples=int(os.environ.get("BORUTA_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(method=st.sampled_from(METHODS), payload=st.binary(max_size=300), who=CALLERS)
def test_malformed_bytes(
    scheduler: tuple[str, grpc.Channel], method: Any, payload: bytes, who: Any
) -> None:
    check(scheduler[1], method, payload, who)


@FUZZ
@given(data=st.data(), method=st.sampled_from(METHODS), who=CALLERS)
def test_generated_messages(
    scheduler: tuple[str, grpc.Channel], data: st.DataObject, method: Any, who: Any
) -> None:
    payload = data.draw(messages(method.input_type))
    check(scheduler[1], method, payload, who)


def test_oversized_messages_are_refused(scheduler: tuple[str, grpc.Channel]) -> None:
    channel = scheduler[1]
    big = requests_pb2.NewRequestRequest(caps={"board": "x" * (2 << 20)}).SerializeToString()
    for method in METHODS:
        before = snapshot(channel)
        # Refused on arrival; the long limits only keep a loaded machine from a false alarm.
        code = call_raw(channel, method, big, ADMIN, timeout=60, stream_timeout=60)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, (method.full_name, code)
        assert snapshot(channel) == before


def test_unknown_enum_values_are_refused(scheduler: tuple[str, grpc.Channel]) -> None:
    channel = scheduler[1]
    bad_state = workers_pb2.SetStateRequest(worker_uuid="w1")
    bad_state.state = 99  # type: ignore[assignment]
    method = workers_pb2.DESCRIPTOR.services_by_name["Workers"].methods_by_name["SetState"]
    assert (
        call_raw(channel, method, bad_state.SerializeToString(), ADMIN)
        is grpc.StatusCode.INVALID_ARGUMENT
    )
    listing = requests_pb2.ListRequestsRequest(filter=requests_pb2.RequestFilter(states=[77]))  # type: ignore[list-item]
    method = requests_pb2.DESCRIPTOR.services_by_name["Requests"].methods_by_name["ListRequests"]
    assert (
        call_raw(channel, method, listing.SerializeToString(), ADMIN)
        is grpc.StatusCode.INVALID_ARGUMENT
    )
    assert types_pb2.WORKER_STATE_IDLE  # the enum the refusal is about
