"""boruta.address: the one reading of host:port that every process uses."""

from __future__ import annotations

import pytest
from boruta.address import (
    AddressError,
    check_dial_address,
    is_wildcard,
    join_host_port,
    split_host_port,
)
from boruta.tls import is_loopback


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("farm.example:1", ("farm.example", 1)),
        ("[::1]:65535", ("::1", 65535)),
        ("[fe80::1%eth0]:22", ("fe80::1%eth0", 22)),
    ],
)
def test_split_reads_host_and_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address) == expected
    assert join_host_port(*expected) == address


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("farm", "--listen must be host:port, e.g. 127.0.0.1:50051 or [::1]:50051; got 'farm'"),
        ("farm:", "--listen must be host:port, e.g. 127.0.0.1:50051 or [::1]:50051; got 'farm:'"),
        (":50051", "--listen must be host:port, e.g. 127.0.0.1:50051 or [::1]:50051; got ':50051'"),
        ("farm:http", "must be host:port, e.g. 127.0.0.1:50051 or [::1]:50051; got 'farm:http'"),
        ("farm:²", "must be host:port"),
        ("farm:" + "9" * 5000, "must be host:port"),
        ("farm:0", "--listen 'farm:0': the port must be 1-65535"),
        ("farm:65536", "--listen 'farm:65536': the port must be 1-65535"),
        ("::1:50051", "--listen '::1:50051': write an IPv6 host in brackets, e.g. [::1]:50051"),
        ("[farm]:1", "--listen '[farm]:1': brackets are only for IPv6 hosts, e.g. [::1]:50051"),
        ("[::1:1", "brackets are only for IPv6 hosts"),
    ],
)
def test_split_refuses_with_what_to_fix(address: str, message: str) -> None:
    with pytest.raises(AddressError) as caught:
        split_host_port(address, "--listen")
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_a_listen_address_may_ask_for_any_port_on_every_interface() -> None:
    assert split_host_port("127.0.0.1:0", listen=True) == ("127.0.0.1", 0)
    assert split_host_port(":50051", listen=True) == ("", 50051)
    assert split_host_port("[::]:0", listen=True) == ("::", 0)
    with pytest.raises(AddressError, match=r"the port must be 0-65535 \(0: any free port\)"):
        split_host_port("127.0.0.1:70000", listen=True)


def test_long_addresses_are_shown_cut_short() -> None:
    with pytest.raises(AddressError) as caught:
        split_host_port("h" * 10_000)
    assert "(10000 characters)" in str(caught.value)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("address", ["0.0.0.0:22", "[::]:22", "*:22"])
def test_a_dial_address_is_no_wildcard(address: str) -> None:
    with pytest.raises(AddressError) as caught:
        check_dial_address(address, "ssh_address")
    assert str(caught.value) == (
        f"ssh_address {address!r} is a wildcard; advertise a host the scheduler can dial"
    )


def test_a_dial_address_is_read_like_any_other() -> None:
    assert check_dial_address("[::1]:22") == ("::1", 22)
    with pytest.raises(AddressError, match="the port must be 1-65535"):
        check_dial_address("h:0")


def test_wildcards() -> None:
    assert all(is_wildcard(h) for h in ("", "0.0.0.0", "::", "[::]", "*"))
    assert not any(is_wildcard(h) for h in ("127.0.0.1", "::1", "[::1]", "farm"))


def test_plaintext_loopback_check_reads_addresses_the_same_way() -> None:
    assert all(is_loopback(a) for a in ("127.0.0.1:0", "[::1]:50051", "localhost:1"))
    # Not loopback, or not an address at all: plaintext stays refused.
    assert not any(is_loopback(a) for a in ("10.0.0.1:1", ":50051", "::1:50051", "localhost"))
