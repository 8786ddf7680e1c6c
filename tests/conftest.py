"""Fixtures of the integration tests: a real scheduler on loopback and a farm around it."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from boruta_client.config import (
    CONFIG_VARIABLE,
    CONTEXT_VARIABLE,
    SCHEDULERS_VARIABLE,
    VARIABLES,
)
from boruta_scheduler.config import SchedulerConfig, ServerConfig
from boruta_scheduler.core import Policy
from boruta_scheduler.rpc.server import Scheduler
from demo_farm_kit import DemoFarm
from demo_farm_kit import demo_farm as start_demo_farm
from farm_kit import Farm
from pg_kit import postgres_fixture, postgres_url_fixture

__all__ = ["postgres_fixture", "postgres_url_fixture"]  # PostgreSQL, for the tests here

# Client() reads schedctl's settings (the BORUTA_* variables, the config file): the tests,
# and the clients they start, must not find the farm of whoever runs them.
for _variable in (CONFIG_VARIABLE, CONTEXT_VARIABLE, SCHEDULERS_VARIABLE, *VARIABLES.values()):
    os.environ.pop(_variable, None)
os.environ["XDG_CONFIG_HOME"] = os.path.join(tempfile.gettempdir(), "boruta-tests-no-config")


async def start_scheduler(
    tmp_path: Path, policy: Policy | None = None, **server: object
) -> Scheduler:
    settings: dict[str, object] = {"heartbeat_interval": 0.2, **server}
    config = SchedulerConfig(
        server=ServerConfig(
            listen="127.0.0.1:0",
            data_dir=str(tmp_path / "state"),
            dryad_call_timeout=10,
            plaintext=True,
            **settings,  # type: ignore[arg-type]
        ),
        policy=policy or Policy(),
    )
    scheduler = Scheduler(config)
    await scheduler.start()
    return scheduler


@contextlib.asynccontextmanager
async def farm_on(tmp_path: Path, policy: Policy | None = None) -> AsyncIterator[Farm]:
    """A scheduler on the state under tmp_path and its farm, both stopped on leaving; use
    it again with the same tmp_path for a restart."""
    scheduler = await start_scheduler(tmp_path, policy)
    farm = Farm(f"127.0.0.1:{scheduler.port}")
    farm.scheduler = scheduler  # type: ignore[attr-defined]
    try:
        yield farm
    finally:
        await farm.close()
        await scheduler.stop(grace=0)


@pytest.fixture
def policy() -> Policy:
    """Override in a test module to run the scheduler with other rules."""
    return Policy()


@pytest.fixture
async def farm(tmp_path: Path, policy: Policy) -> AsyncIterator[Farm]:
    """An in-process scheduler (real gRPC on loopback, SQLite in tmp_path) and its farm."""
    async with farm_on(tmp_path, policy) as farm:
        yield farm


@pytest.fixture(scope="session")
def demo_farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoFarm]:
    """The farm `make run` starts (tools/local_farm.py), once for every test that follows
    the README with it."""
    with start_demo_farm(tmp_path_factory.mktemp("demo")) as running:
        yield running
