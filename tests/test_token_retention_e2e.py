"""The token retention in a real scheduler process over TLS: a short-lived token is forgotten
once it has expired longer ago than --token-retention, and a restarted scheduler never hands
its id out again, even with every token purged."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from boruta_client import Client, Unauthenticated
from farm_kit import SchedulerProcess
from pki_kit import FarmPki

# Generous: the machine may be loaded; the retention and TTLs below are a second or two.
PATIENCE = 120.0


def eventually(what: str, check: Callable[[], bool]) -> None:
    """Poll check until it holds, failing after PATIENCE seconds."""
    give_up = time.monotonic() + PATIENCE
    while not check():
        if time.monotonic() > give_up:
            pytest.fail(f"not within {PATIENCE:.0f} s: {what}")
        time.sleep(0.2)


def test_a_short_lived_token_is_forgotten_and_its_id_never_comes_back(tmp_path: Path) -> None:
    pki = FarmPki(tmp_path / "pki")
    files = pki.scheduler()
    scheduler = SchedulerProcess(
        tmp_path / "scheduler",
        *("--tls-ca", files.ca, "--tls-cert", files.cert, "--tls-key", files.key),
        *("--listen-tokens", "127.0.0.1:0", "--token-retention", "1s"),
    )
    scheduler.start()
    try:
        with Client(scheduler.address, tls=pki.admin()) as admin:
            lasting = admin.issue_token("dashboard", description="kept while it works")
            short = admin.issue_token("ci-bot", ttl=1.0, description="one pipeline run")
            assert short.token.id > lasting.token.id

            def listed() -> list[int]:
                return [t.id for t in admin.list_tokens()]

            eventually(
                "the expired token leaves ListTokens", lambda: short.token.id not in listed()
            )
            assert listed() == [lasting.token.id]  # still working: kept
            ci = Client(scheduler.token_address, ca=files.ca, token=short.secret)
            with ci, pytest.raises(Unauthenticated, match="not valid"):
                ci.whoami()
            with Client(scheduler.token_address, ca=files.ca, token=lasting.secret) as dashboard:
                assert dashboard.whoami().user == "dashboard"
            purges = [e for e in admin.audit_events() if e.action == "PurgeTokens"]
            assert purges and f"ids {short.token.id}" in purges[0].detail
            # Revoked, the newest working one goes too: the store then holds no token.
            admin.revoke_token(lasting.token.id)
            eventually("the revoked token leaves ListTokens", lambda: listed() == [])
        newest = max(lasting.token.id, short.token.id)
        assert scheduler.stop() == 0
        scheduler.start()
        with Client(scheduler.address, tls=pki.admin()) as admin:
            assert admin.list_tokens() == []
            after = admin.issue_token("ci-bot", ttl=60.0, description="after the restart")
        assert after.token.id == newest + 1
        logs = scheduler.log_path.read_text()
        for secret in (lasting.secret, short.secret, after.secret):
            assert secret.partition(".")[2] not in logs
    finally:
        scheduler.stop()
