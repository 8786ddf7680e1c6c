"""The standard probes every boruta server answers: grpc.health.v1 and server reflection,
so that grpcurl, grpc_health_probe, load balancers and Kubernetes need none of our protos.

Needs the `probes` extra of boruta-api (grpcio-health-checking, grpcio-reflection), which
the scheduler and the dryad install.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

HEALTH_SERVICE = health.SERVICE_NAME
REFLECTION_SERVICE = reflection.SERVICE_NAME


class Probes:
    """The health status a server reports for itself ("") and for each of its services."""

    def __init__(self, servicer: Any, services: tuple[str, ...]) -> None:
        self._servicer = servicer
        self._services = services

    async def set_serving(self, serving: bool) -> None:
        """SERVING or NOT_SERVING, for the whole server and each service at once."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self._services):
            await self._servicer.set(name, status)


async def add_probes(server: grpc.aio.Server, services: Iterable[str], serving: bool) -> Probes:
    """Serve grpc.health.v1 and reflection of services (full names, e.g. boruta.v1.Dryad)
    on server, before it starts; health says serving for all of them."""
    names = tuple(services)
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflection.enable_server_reflection((*names, HEALTH_SERVICE, REFLECTION_SERVICE), server)
    probes = Probes(servicer, names)
    await probes.set_serving(serving)
    return probes
