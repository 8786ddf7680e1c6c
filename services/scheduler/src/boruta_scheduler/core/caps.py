"""What a request's caps ask of a board: alternatives (`|`) and list items (`,`).

A board's cap value is read as a set of items: the value itself, or, if it holds a comma,
its comma-separated items (spaces around them dropped). A request's value is one or more
alternatives separated by `|`, each one or more items separated by `,`; the board matches
when its item set for that key holds every item of at least one alternative. A value
without `|` or `,` on either side therefore still means equality.

Both sides become sets of (key, item) pairs, so that the indexes of queue.py and
workers.py keep working on pairs: a request's caps without alternatives are one set of
pairs the board must hold (`Need.required`), and each key with alternatives adds a choice
of such sets (`Need.choices`).
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from boruta_scheduler.errors import InvalidArgument, shown
from boruta_scheduler.types import CapPair

ALTERNATIVES = "|"
ITEMS = ","

Alternative = frozenset[CapPair]


@dataclass(frozen=True, slots=True)
class Need:
    """Pairs a board must hold all of, and choices of which it must meet one alternative each."""

    required: frozenset[CapPair]
    choices: tuple[tuple[Alternative, ...], ...] = ()

    def met_by(self, items: frozenset[CapPair]) -> bool:
        """Whether a board with these (key, item) pairs satisfies the need."""
        if not self.required <= items:
            return False
        for choice in self.choices:
            for alternative in choice:
                if alternative <= items:
                    break
            else:
                return False
        return True


def _items(text: str) -> list[str]:
    """The items of a value: itself, or its comma-separated items without spaces around
    them and without empty ones (a value of only commas stays itself)."""
    if ITEMS not in text:
        return [text]
    items = [item.strip() for item in text.split(ITEMS)]
    return [item for item in items if item] or [text]


def _plain(caps: Iterable[CapPair]) -> bool:
    """Whether no value has a `|` or `,`: the common case, on every NewRequest."""
    # A plain loop, not all() of a generator: half the cost on the hot path.
    for _, value in caps:  # noqa: SIM110
        if ALTERNATIVES in value or ITEMS in value:
            return False
    return True


def board_items(caps: frozenset[CapPair]) -> frozenset[CapPair]:
    """A board's caps as (key, item) pairs; the caps themselves when no value has a comma."""
    if _plain(caps):
        return caps
    intern = sys.intern
    return frozenset((key, intern(item)) for key, value in caps for item in _items(value))


def need_of(caps: frozenset[CapPair]) -> Need:
    """What a request with these caps needs of a board. Reads any stored value, so a
    request restored from the store needs no check; new ones are checked by
    check_request_caps first."""
    if _plain(caps):
        return Need(caps)
    intern = sys.intern
    required: set[CapPair] = set()
    choices: list[tuple[Alternative, ...]] = []
    for key, value in caps:
        alternatives = {
            frozenset((key, intern(item)) for item in _items(text))
            for text in value.split(ALTERNATIVES)
        }
        if len(alternatives) == 1:
            required.update(*alternatives)
        else:
            choices.append(tuple(sorted(alternatives, key=sorted)))
    choices.sort(key=lambda choice: [sorted(alternative) for alternative in choice])
    return Need(frozenset(required), tuple(choices))


def check_request_caps(caps: Collection[CapPair], *, what: str = "caps") -> None:
    """Refuse a request value with an empty alternative or item, or with spaces around
    `|` or `,` (a value without them is taken as it is)."""
    if _plain(caps):
        return
    for key, value in caps:
        if ALTERNATIVES not in value and ITEMS not in value:
            continue
        where = f"{what} value {shown(value)} of {key!r}"
        for alternative in value.split(ALTERNATIVES):
            if not alternative:
                raise InvalidArgument(
                    f"{where} has an empty alternative; separate alternatives with a single "
                    f"'|' and none at either end, as in os=linux|android"
                )
            for item in alternative.split(ITEMS):
                if not item:
                    raise InvalidArgument(
                        f"{where} has an empty item; separate the items a board must all have "
                        f"with a single ',' and none at either end, as in "
                        f"circuits=usb.pc.vcc,handset.battery"
                    )
                if item != item.strip():
                    raise InvalidArgument(
                        f"{where} has spaces around '|' or ','; remove them, as in os=linux|android"
                    )
