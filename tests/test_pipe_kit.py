"""LineReader: every line written to the pipe is returned, whatever the writes' sizes.

Every byte is in the pipe before it is read, so the reads never wait (timeout 0).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import pytest
from pipe_kit import LineReader


@contextmanager
def pipe() -> Iterator[tuple[IO[Any], IO[Any]]]:
    read_end, write_end = os.pipe()
    with os.fdopen(read_end, "rb") as reader, os.fdopen(write_end, "wb", buffering=0) as writer:
        yield reader, writer


def test_lines_that_arrive_together_are_each_returned() -> None:
    # As when a watch prints BUSY and MAINTENANCE before the test reads the first.
    with pipe() as (reader, writer):
        writer.write(b'{"state": "BUSY"}\n{"state": "MAINTENANCE"}\n')
        lines = LineReader(reader)
        assert lines.next_line(timeout=0) == '{"state": "BUSY"}'
        assert lines.next_line(timeout=0) == '{"state": "MAINTENANCE"}'


def test_a_line_split_across_writes_is_returned_whole() -> None:
    with pipe() as (reader, writer):
        lines = LineReader(reader)
        writer.write(b"first\nsec")
        assert lines.next_line(timeout=0) == "first"
        writer.write(b"ond\n")
        assert lines.next_line(timeout=0) == "second"


def test_a_missing_line_fails_and_says_what_came() -> None:
    with pipe() as (reader, writer):
        writer.write(b"partial")
        with pytest.raises(AssertionError, match="no whole line within 0 s; so far b'partial'"):
            LineReader(reader).next_line(timeout=0)


def test_the_end_of_the_pipe_before_a_line_fails() -> None:
    with pipe() as (reader, writer):
        writer.write(b"last words")
        writer.close()
        with pytest.raises(AssertionError, match="pipe ended before a whole line"):
            LineReader(reader).next_line(timeout=0)
