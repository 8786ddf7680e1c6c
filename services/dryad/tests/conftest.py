"""Fixtures of the dryad's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from boruta_dryad.users import JobHost
from users_kit import job_host


@pytest.fixture
def host() -> Iterator[JobHost]:
    """The host-wide parts of a dryad of the test's own (see users_kit.job_host)."""
    with job_host() as made:
        yield made
