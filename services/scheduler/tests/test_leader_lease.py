"""The leader's lease and the fence on a real PostgreSQL server (design rule 10): one
leader at a time, by the database's clock; a leader whose epoch is gone writes nothing."""

from __future__ import annotations

import pytest
from boruta_scheduler.config import load_config
from boruta_scheduler.errors import NotLeader
from boruta_scheduler.store.leader import Candidate, LeaderLease
from boruta_scheduler.store.postgresql import PostgreSQLStore
from core_kit import CoreKit
from pg_kit import postgres_fixture, postgres_url_fixture  # noqa: F401 - fixtures
from test_store_contract import commit_all, farm_changes

A = Candidate("a", "10.0.0.1:50051", "10.0.0.1:50052")
B = Candidate("b", "10.0.0.2:50051", "")


def test_one_leader_until_its_lease_runs_out(postgres_url: str) -> None:
    first, second = LeaderLease(postgres_url, 3600), LeaderLease(postgres_url, 3600)
    assert first.acquire(A) == 1
    assert second.acquire(B) is None  # the lease runs for an hour
    known = second.current()
    assert (known.epoch, known.holder, known.address, known.token_address, known.live) == (
        1,
        "a",
        "10.0.0.1:50051",
        "10.0.0.1:50052",
        True,
    )
    assert first.renew(1)
    first.release(1)  # a clean stop hands over at once
    assert not second.current().live
    assert second.acquire(B) == 2
    assert not first.renew(1)  # its epoch is gone
    assert second.renew(2)
    first.close()
    second.close()


def test_a_fenced_leader_commits_nothing(postgres_url: str) -> None:
    # A lease of zero seconds has run out by the next statement: anyone may take it.
    old_lease, new_lease = LeaderLease(postgres_url, 0), LeaderLease(postgres_url, 0)
    old, new = PostgreSQLStore(postgres_url), PostgreSQLStore(postgres_url)
    fenced: list[bool] = []
    old.epoch = old_lease.acquire(A)
    old.on_fenced = lambda: fenced.append(True)
    kit = CoreKit()
    kit.add_worker("w1", {"board": "x"})
    commit_all(old, kit)  # while it leads, it writes
    assert [w.uuid for w in new.load().workers] == ["w1"]

    new.epoch = new_lease.acquire(B)
    assert new.epoch == 2
    farm_changes(kit)
    with pytest.raises(NotLeader, match="epoch 2 leads, not 1"):
        commit_all(old, kit)
    assert fenced == [True]
    assert [w.uuid for w in new.load().workers] == ["w1"]  # nothing of the fenced commit
    assert new.load().requests == []
    for closing in (old, new, old_lease, new_lease):
        closing.close()


def test_lease_settings_come_from_options_and_environment() -> None:
    config = load_config(["--lease", "3s"], {"BORUTA_LEASE_RENEW": "1s"})
    assert (config.server.lease, config.server.lease_renew) == (3.0, 1.0)
    with pytest.raises(ValueError, match="lease_renew"):
        load_config(["--lease", "1s", "--lease-renew", "1s"], {})
