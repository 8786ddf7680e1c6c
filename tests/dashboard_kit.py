"""Reading the scheduler's dashboard over HTTPS in tests: pages, and its event stream."""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def get(
    address: str,
    path: str,
    context: ssl.SSLContext,
    headers: Mapping[str, str] | None = None,
    form: Mapping[str, str] | None = None,
) -> Reply:
    """One request (a POST when form is given); redirects are answered, not followed."""
    data = None if form is None else urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(
        f"https://{address}{path}", data=data, headers=dict(headers or {})
    )
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context), _NoRedirect()
    )
    try:
        with opener.open(request, timeout=60) as reply:
            return Reply(reply.status, dict(reply.headers), reply.read().decode())
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers), error.read().decode())


def poll_page(
    address: str,
    path: str,
    context: ssl.SSLContext,
    until: Callable[[str], bool],
    what: str,
    headers: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> str:
    """Fetch path until until(body) holds; fails after timeout with the last body."""
    give_up = time.monotonic() + timeout
    while True:
        reply = get(address, path, context, headers)
        if reply.status == 200 and until(reply.body):
            return reply.body
        if time.monotonic() > give_up:
            raise AssertionError(f"{path} never showed {what}: {reply.status} {reply.body}")
        time.sleep(0.05)


class EventStream:
    """An open /events stream; events() yields (kind, data) as they come."""

    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.response = response

    def events(self) -> Iterator[tuple[str, dict[str, object]]]:
        kind = ""
        while True:
            line = self.response.readline().decode()
            if not line:
                return
            line = line.rstrip("\n")
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield kind, json.loads(line.removeprefix("data: "))
                kind = ""

    def wait_for(self, accepts: Callable[[str, dict[str, object]], bool], what: str) -> None:
        """Read events until one is accepted; the socket's timeout bounds each read."""
        for kind, data in self.events():
            if accepts(kind, data):
                return
        raise AssertionError(f"the event stream ended before {what}")


@contextmanager
def event_stream(
    address: str, context: ssl.SSLContext, headers: Mapping[str, str] | None = None
) -> Iterator[EventStream]:
    """/events opened, and read up to its `ready` event (the watches are in place)."""
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=60)
    try:
        connection.request("GET", "/events", headers=dict(headers or {}))
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        stream = EventStream(response)
        stream.wait_for(lambda kind, _: kind == "ready", "its ready event")
        yield stream
    finally:
        connection.close()
