"""The standard probes of a live scheduler and dryad (issue 13): grpc.health.v1 and server
reflection answer what grpcurl and grpc_health_probe ask, and reflection alone (none of
boruta's generated code) is enough to make a real call."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import uuid4

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from live_farm import LiveFarm, live_farm

BOARDS = {str(uuid4()): {"board": "rpi4"}, str(uuid4()): {"board": "rpi4"}}
HEALTH = "grpc.health.v1.Health"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"
SCHEDULER_SERVICES = {
    "boruta.v1.Requests",
    "boruta.v1.Workers",
    "boruta.v1.Superviser",
    "boruta.v1.Audit",
    "boruta.v1.Tokens",
}


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFarm]:
    with live_farm(tmp_path_factory.mktemp("farm"), BOARDS) as running:
        yield running


def services_of(address: str) -> set[str]:
    with grpc.insecure_channel(address) as channel:
        return set(ProtoReflectionDescriptorDatabase(channel).get_services())


def health_of(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
        return int(reply.status)


def test_reflection_lists_the_schedulers_services(farm: LiveFarm) -> None:
    assert services_of(farm.address) == SCHEDULER_SERVICES | {HEALTH, REFLECTION}


def test_reflection_lists_the_dryads_services(farm: LiveFarm) -> None:
    assert services_of(farm.dryad_address) == {"boruta.v1.Dryad", HEALTH, REFLECTION}


@pytest.mark.parametrize("service", ["", *sorted(SCHEDULER_SERVICES)])
def test_a_scheduler_on_its_own_store_is_serving(farm: LiveFarm, service: str) -> None:
    assert health_of(farm.address, service) == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", ["", "boruta.v1.Dryad"])
def test_a_running_dryad_is_serving(farm: LiveFarm, service: str) -> None:
    assert health_of(farm.dryad_address, service) == health_pb2.HealthCheckResponse.SERVING


def test_health_of_a_service_nobody_serves_is_not_found(farm: LiveFarm) -> None:
    for address in (farm.address, farm.dryad_address):
        with pytest.raises(grpc.RpcError) as raised:
            health_of(address, "boruta.v1.NoSuchService")
        assert raised.value.code() is grpc.StatusCode.NOT_FOUND


def test_a_call_built_from_reflection_alone_lists_the_boards(farm: LiveFarm) -> None:
    """What grpcurl does: fetch the descriptors from the server, build the request message
    from them, call, and decode the answer, with no generated code of ours."""
    with grpc.insecure_channel(farm.address) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        method = pool.FindServiceByName("boruta.v1.Workers").FindMethodByName("ListWorkers")
        ask = message_factory.GetMessageClass(method.input_type)
        answer = message_factory.GetMessageClass(method.output_type)
        call = channel.unary_unary(
            "/boruta.v1.Workers/ListWorkers",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=answer.FromString,
        )
        reply = call(
            ask(), timeout=30, metadata=[("x-boruta-user", "root"), ("x-boruta-role", "admin")]
        )
    assert {worker.uuid for worker in reply.workers} >= set(BOARDS)


def test_reflection_describes_the_dryads_methods(farm: LiveFarm) -> None:
    with grpc.insecure_channel(farm.dryad_address) as channel:
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        dryad = pool.FindServiceByName("boruta.v1.Dryad")
    assert {"Prepare", "PutInMaintenance", "Healthcheck"} <= {m.name for m in dryad.methods}
