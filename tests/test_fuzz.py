"""Fuzzing a running scheduler: generated, malformed and oversized messages to every RPC.
The scheduler never crashes, answers only with the codes that mean "bad input" (or OK for
input that happens to be valid) and short messages, and a call that fails leaves the
state exactly as it was. Besides random input, every integer field is tried at the edges
of its type, every page token at the edges of int64, and every string field with half a
megabyte of text."""

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
from boruta_scheduler.listing import PageTokens
from boruta_scheduler.rpc import convert
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
DRYAD = (("x-boruta-user", "pc"), ("x-boruta-role", "dryad"))
CALLERS = st.sampled_from(
    [
        (("x-boruta-user", "alice"),),
        (("x-boruta-user", "bob"), ("x-boruta-groups", "lab")),
        ADMIN,
        DRYAD,
        (),
    ]
)
# Half a megabyte: fits in a message (1 MiB) but must never come back in an error.
HUGE_TEXTS = ["x" * 500_000, "7" * 500_000, "127.0.0.1:" + "0" * 5_000 + "22"]
TEXT = st.one_of(
    st.text(max_size=40),
    st.text(max_size=3000),
    st.sampled_from(["", "w1", "*"]),
    st.text("0123456789", min_size=15, max_size=25),
    st.sampled_from(HUGE_TEXTS),
)
# The ends of each integer type and of int64 inside wider ones: where conversions break.
EDGES = {
    pbd.FieldDescriptor.TYPE_UINT32: [0, 1, 2**31 - 1, 2**31, 2**32 - 1],
    pbd.FieldDescriptor.TYPE_INT32: [-(2**31), -1, 0, 1, 2**31 - 1],
    pbd.FieldDescriptor.TYPE_UINT64: [0, 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1],
    pbd.FieldDescriptor.TYPE_INT64: [-(2**63), -(2**63) + 1, -1, 0, 2**62, 2**63 - 1],
}
RANGES = {
    pbd.FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    pbd.FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    pbd.FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    pbd.FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
}
MAX_DETAILS = 1024


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, grpc.Channel]]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    # The scheduler signs page tokens with this key, so the forged ones below pass the
    # signature and reach the checks of the sort key inside.
    (data_dir / PageTokens.KEY_FILE).write_text(FUZZ_KEY.hex())
    process = SchedulerProcess(data_dir, "--heartbeat-timeout", "1h", "--healthcheck-interval", "0")
    address = process.start()
    channel = grpc.insecure_channel(address)
    # Something to aim at: a worker (in MAINTENANCE, no dryad behind it) and requests.
    register = channel.unary_unary(
        "/boruta.v1.Superviser/Register",
        request_serializer=superviser_pb2.RegisterRequest.SerializeToString,
        response_deserializer=superviser_pb2.RegisterResponse.FromString,
    )
    for uuid in ("w1", "w2"):
        register(
            superviser_pb2.RegisterRequest(
                caps={"UUID": uuid, "board": "rpi4"},
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
) -> tuple[grpc.StatusCode, str]:
    """Send bytes as the request message of a method; return how the call ended and the
    error's message."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path)(payload, metadata=who, timeout=stream_timeout)
            for _ in stream:
                pass
        else:
            channel.unary_unary(path)(payload, metadata=who, timeout=timeout)
    except grpc.RpcError as error:
        return error.code(), error.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def field_values(field: pbd.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == pbd.FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    if field.name == "page_token":
        return st.one_of(TEXT, st.sampled_from(PAGE_TOKENS))
    if field.type == pbd.FieldDescriptor.TYPE_STRING:
        return TEXT
    if field.type == pbd.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == pbd.FieldDescriptor.TYPE_ENUM:
        return st.integers(min_value=-5, max_value=40)  # unknown values included
    if field.type in RANGES:
        low, high = RANGES[field.type]
        return st.one_of(
            st.integers(min_value=low, max_value=high), st.sampled_from(EDGES[field.type])
        )
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


def check(
    channel: grpc.Channel, method: pbd.MethodDescriptor, payload: bytes, who: Any
) -> tuple[grpc.StatusCode, str]:
    before = snapshot(channel)
    code, details = call_raw(channel, method, payload, who)
    assert code is grpc.StatusCode.OK or code in REFUSALS, (method.full_name, code, details)
    assert len(details) <= MAX_DETAILS, (method.full_name, code, details[:200])
    if code is not grpc.StatusCode.OK:
        assert snapshot(channel) == before, (
            f"{method.full_name} failed with {code} yet changed the state"
        )
    return code, details


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
        code, _ = call_raw(channel, method, big, ADMIN, timeout=60, stream_timeout=60)
        assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, (method.full_name, code)
        assert snapshot(channel) == before


def test_unknown_enum_values_are_refused(scheduler: tuple[str, grpc.Channel]) -> None:
    channel = scheduler[1]
    bad_state = workers_pb2.SetStateRequest(worker_uuid="w1")
    bad_state.state = 99  # type: ignore[assignment]
    method = workers_pb2.DESCRIPTOR.services_by_name["Workers"].methods_by_name["SetState"]
    assert (
        call_raw(channel, method, bad_state.SerializeToString(), ADMIN)[0]
        is grpc.StatusCode.INVALID_ARGUMENT
    )
    listing = requests_pb2.ListRequestsRequest(filter=requests_pb2.RequestFilter(states=[77]))  # type: ignore[list-item]
    method = requests_pb2.DESCRIPTOR.services_by_name["Requests"].methods_by_name["ListRequests"]
    assert (
        call_raw(channel, method, listing.SerializeToString(), ADMIN)[0]
        is grpc.StatusCode.INVALID_ARGUMENT
    )
    assert types_pb2.WORKER_STATE_IDLE  # the enum the refusal is about


FUZZ_KEY = bytes(range(32))


def _page_tokens() -> tuple[list[str], list[str]]:
    """Tokens a client could forge for each list: (those every list must refuse, others).
    Sort keys are ints for requests and history, strings for workers sorted by uuid."""
    signer = PageTokens(FUZZ_KEY)
    encode_token = signer.encode
    requests_scope = convert.request_query(requests_pb2.ListRequestsRequest(), signer)[1]
    workers_scope = convert.worker_query(workers_pb2.ListWorkersRequest(), signer)[1]
    history_scope = PageTokens.scope("ListWorkerHistory", "w1")
    audit_scope = PageTokens.scope("ListAuditEvents")
    outside: list[Any] = [2**63, 2**64, -(2**63) - 1, 10**30, float("nan"), float("inf")]
    inside: list[Any] = [2**63 - 1, -(2**63), 0]
    # Unsigned: every list refuses them (the audit log's tokens were bare ids once).
    bad = [str(2**63), "9" * 19, "9" * 20, "\u0661\u0662", "\u00b2", "0", "-1", "9" * 18, "a.b"]
    other: list[str] = []
    for scope in (requests_scope, workers_scope, history_scope, audit_scope):
        for key in outside:
            bad += [encode_token(scope, (key, key)), encode_token(scope, (key, 1))]
        for key in inside:
            forged = [encode_token(scope, (key, key)), encode_token(scope, (key, 1))]
            # A worker list sorted by uuid has string keys: numbers are no key of it.
            (bad if scope == workers_scope else other).extend(forged)
    return bad, other


BAD_PAGE_TOKENS, OTHER_PAGE_TOKENS = _page_tokens()
PAGE_TOKENS = BAD_PAGE_TOKENS + OTHER_PAGE_TOKENS


def _caller(method: pbd.MethodDescriptor) -> Any:
    return DRYAD if method.containing_service.name == "Superviser" else ADMIN


Path = tuple[str, ...]


def _fields(desc: pbd.Descriptor, path: Path = ()) -> Iterator[tuple[Path, pbd.FieldDescriptor]]:
    """Every scalar field of a message and of the messages in it, with its path; a map's
    keys and values are the fields "key" and "value" under the map's name."""
    for field in desc.fields:
        if field.type != pbd.FieldDescriptor.TYPE_MESSAGE:
            yield (*path, field.name), field
        elif field.message_type.GetOptions().map_entry:
            for part in field.message_type.fields:
                yield (*path, field.name, part.name), part
        elif len(path) < 3:
            yield from _fields(field.message_type, (*path, field.name))


def _with(desc: pbd.Descriptor, path: Path, value: Any) -> bytes:
    """A message of desc with the field at path set to value (added to a repeated field),
    aimed at the worker w1 where the message names a worker, so that it gets past lookup."""
    message = message_class(desc)()
    if "worker_uuid" in desc.fields_by_name:
        message.worker_uuid = "w1"  # type: ignore[attr-defined]
    target = message
    for depth, name in enumerate(path[:-1]):
        inner = getattr(target, name)
        if target.DESCRIPTOR.fields_by_name[name].message_type.GetOptions().map_entry:
            key, entry = (value, "v") if path[depth + 1] == "key" else ("k", value)
            if isinstance(key, str) and isinstance(entry, str):
                inner[key] = entry
            return message.SerializeToString()
        target = inner.add() if hasattr(inner, "add") else inner
    field = target.DESCRIPTOR.fields_by_name[path[-1]]
    if field.is_repeated:
        getattr(target, path[-1]).append(value)
    else:
        setattr(target, path[-1], value)
    return message.SerializeToString()


def test_integers_at_the_edges_of_their_types(scheduler: tuple[str, grpc.Channel]) -> None:
    """Ids, page sizes, timestamps and durations at the ends of (u)int32 and (u)int64."""
    channel = scheduler[1]
    tried = 0
    for method in METHODS:
        for path, field in _fields(method.input_type):
            for value in EDGES.get(field.type, []):
                check(channel, method, _with(method.input_type, path, value), _caller(method))
                tried += 1
    assert tried > 100


def test_page_tokens_at_the_int64_edges(scheduler: tuple[str, grpc.Channel]) -> None:
    channel = scheduler[1]
    for method in METHODS:
        fields = method.input_type.fields_by_name
        if "page_token" not in fields:
            continue
        for token in PAGE_TOKENS:
            message = message_class(method.input_type)(page_token=token)
            if "worker_uuid" in fields:
                message.worker_uuid = "w1"  # type: ignore[attr-defined]
            code, details = check(channel, method, message.SerializeToString(), ADMIN)
            if token in BAD_PAGE_TOKENS:
                assert code is grpc.StatusCode.INVALID_ARGUMENT, (method.name, token, details)
                assert "page_token" in details, details


def test_huge_names_are_refused_and_never_echoed(scheduler: tuple[str, grpc.Channel]) -> None:
    """Half a megabyte in any string field: a clear refusal whose message stays short."""
    channel = scheduler[1]
    for method in METHODS:
        for path, field in _fields(method.input_type):
            if field.type != pbd.FieldDescriptor.TYPE_STRING:
                continue
            for text in HUGE_TEXTS:
                check(channel, method, _with(method.input_type, path, text), _caller(method))
    method = workers_pb2.DESCRIPTOR.services_by_name["Workers"].methods_by_name["GetWorkerInfo"]
    payload = workers_pb2.GetWorkerInfoRequest(worker_uuid="x" * 500_000).SerializeToString()
    code, details = call_raw(channel, method, payload, ADMIN)
    assert code is grpc.StatusCode.NOT_FOUND, details
    assert "xxxx" in details and "…" in details and len(details) < 300, details
