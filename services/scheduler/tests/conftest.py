"""Fixtures of the scheduler's unit tests."""

from pg_kit import postgres, postgres_url

__all__ = ["postgres", "postgres_url"]
