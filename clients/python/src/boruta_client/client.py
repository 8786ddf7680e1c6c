"""Client: the blocking way Python code uses the farm. It is a facade over AsyncClient, run
in an event loop thread the Client owns (see _bridge); Lease, Board and Watch likewise."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar, Unpack, overload

from boruta_client._base import ClientBase
from boruta_client._bridge import Facade, Portal, blocking, blocking_as, in_loop
from boruta_client.aio import AsyncClient, AsyncWatch
from boruta_client.errors import BorutaError
from boruta_client.lease import (
    AsyncBoard,
    AsyncBoards,
    AsyncBoardsLease,
    AsyncLease,
    LeaseOptions,
)
from boruta_client.ssh import BoardSSH
from boruta_client.types import Access, Job, Request

T = TypeVar("T")


class Watch(Facade[AsyncWatch[T]], Generic[T]):
    """A stream of changes; iterate over it, and close it (or use ``with``) when done. It
    ends when closed or when the watch's timeout passes."""

    def __iter__(self) -> Iterator[T]:
        items = aiter(self._inner)
        while True:
            try:
                yield self._portal.run(anext(items))
            except StopAsyncIteration:
                return

    close = blocking(in_loop(AsyncWatch.close))

    def __enter__(self) -> Watch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Board(Facade[AsyncBoard]):
    """A board leased for a job: its access, its current job (kept up to date by the
    lease's prolongs) and a lazy SSH connection."""

    @property
    def request(self) -> Request:
        return self._inner.request

    @property
    def access(self) -> Access:
        return self._inner.access

    @property
    def job(self) -> Job:
        return self._inner.job

    @property
    def prolong_error(self) -> BorutaError | None:
        return self._inner.prolong_error

    @property
    def worker_uuid(self) -> str:
        return self._inner.worker_uuid

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def index(self) -> int:
        return self._inner.index

    @property
    def ssh(self) -> BoardSSH:
        """The SSH connection to the board, opened on first use."""
        return self._inner.ssh.sync

    close = blocking(AsyncBoard.close)


class Boards(Facade[AsyncBoards]):
    """The boards of a request of several profiles, in profile order: ``boards[0]`` or
    ``boards["relay"]`` (by the profile's name), and iteration in order."""

    @property
    def names(self) -> tuple[str, ...]:
        return self._inner.names

    def __getitem__(self, key: int | str) -> Board:
        return Board(self._portal, self._inner[key])

    def __iter__(self) -> Iterator[Board]:
        return (Board(self._portal, board) for board in self._inner)

    def __len__(self) -> int:
        return len(self._inner)


class Lease(Facade[AsyncLease]):
    """``with client.lease(caps) as board:`` queues, waits, keeps the job alive with
    ProlongAccess while the block runs, and closes the request on any way out, Ctrl-C
    included (even one that comes while the request is being created). With profiles,
    board is the first profile's and boards holds them all."""

    _board: Board | None = None

    @property
    def request(self) -> Request | None:
        return self._inner.request

    @property
    def board(self) -> Board | None:
        if self._board is None and self._inner.board is not None:
            self._board = Board(self._portal, self._inner.board)
        return self._board

    @property
    def boards(self) -> tuple[Board, ...]:
        return tuple(Board(self._portal, board) for board in self._inner.boards)

    def __enter__(self) -> Board:
        try:
            self._portal.run(self._inner.__aenter__())
        except KeyboardInterrupt:
            # Ctrl-C as the lease was entered: the with block will not exit it.
            self._portal.run(self._inner.__aexit__(None, None, None))
            raise
        board = self.board
        assert board is not None
        return board

    def __exit__(self, *exc: object) -> None:
        self._portal.run(self._inner.__aexit__(*exc))


class BoardsLease(Facade[AsyncBoardsLease]):
    """``with client.lease_boards({"dut": caps, "relay": caps}) as boards:`` is Lease for
    several boards at once: the request gets them all or waits holding none, and the block
    gets every board, by name or place."""

    @property
    def request(self) -> Request | None:
        return self._inner.request

    @property
    def lease(self) -> Lease:
        """The lease underneath (its board is the first profile's)."""
        return Lease(self._portal, self._inner.lease)

    def __enter__(self) -> Boards:
        lease = self.lease
        lease.__enter__()
        return Boards(self._portal, AsyncBoards(self._inner.lease.boards))

    def __exit__(self, *exc: object) -> None:
        self._portal.run(self._inner.__aexit__(*exc))


def lease_facade(portal: Portal, inner: AsyncLease | AsyncBoardsLease) -> Lease | BoardsLease:
    """The blocking twin of what AsyncClient.lease returned (one board or several)."""
    if isinstance(inner, AsyncBoardsLease):
        return BoardsLease(portal, inner)
    return Lease(portal, inner)


class Client(ClientBase, Facade[AsyncClient]):
    """A connection to the scheduler; methods block and return the client's typed values.
    ``Client()`` finds the farm as schedctl does (see ClientBase). Each method is the
    AsyncClient's of the same name, run in the Client's own event loop thread.

    Errors are :class:`boruta_client.BorutaError` subclasses carrying the scheduler's message.
    """

    def _open(self) -> None:
        self._portal = Portal(f"boruta-client {self.target}")
        self._inner = AsyncClient(
            context=self.context,
            call_timeout=self.call_timeout,
            failover_timeout=self.failover_timeout,
        )

    @property
    def scheduler(self) -> str:
        """The address of the scheduler the client calls now (the leader, as far as known)."""
        return self._inner.scheduler

    def close(self) -> None:
        self._portal.run(self._inner.close())
        self._portal.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    new_request = blocking(AsyncClient.new_request)
    get_request = blocking(AsyncClient.get_request)
    list_requests = blocking(AsyncClient.list_requests)
    usage = blocking(AsyncClient.usage)
    update_request = blocking(AsyncClient.update_request)
    close_request = blocking(AsyncClient.close_request)
    prolong_access = blocking(AsyncClient.prolong_access)
    acquire_worker = blocking(AsyncClient.acquire_worker)
    if TYPE_CHECKING:
        # What the blocking twin of AsyncClient.lease returns, by its first argument.

        @overload
        def lease(
            self, caps: Mapping[str, str] | None = None, **options: Unpack[LeaseOptions]
        ) -> Lease: ...

        @overload
        def lease(
            self, caps: Sequence[Mapping[str, str]], **options: Unpack[LeaseOptions]
        ) -> BoardsLease: ...

        def lease(
            self,
            caps: Mapping[str, str] | Sequence[Mapping[str, str]] | None = None,
            **options: Unpack[LeaseOptions],
        ) -> Lease | BoardsLease: ...

    else:
        lease = blocking_as(in_loop(AsyncClient.lease), lease_facade)
    lease_boards = blocking_as(in_loop(AsyncClient.lease_boards), BoardsLease)
    attach = blocking_as(in_loop(AsyncClient.attach), Lease)
    watch_requests = blocking_as(AsyncClient.watch_requests, Watch)
    audit_events = blocking(AsyncClient.audit_events)
    issue_token = blocking(AsyncClient.issue_token)
    list_tokens = blocking(AsyncClient.list_tokens)
    revoke_token = blocking(AsyncClient.revoke_token)
    list_workers = blocking(AsyncClient.list_workers)
    whoami = blocking(AsyncClient.whoami)
    get_worker = blocking(AsyncClient.get_worker)
    worker_history = blocking(AsyncClient.worker_history)
    set_worker_state = blocking(AsyncClient.set_worker_state)
    set_worker_groups = blocking(AsyncClient.set_worker_groups)
    deregister_worker = blocking(AsyncClient.deregister_worker)
    watch_workers = blocking_as(AsyncClient.watch_workers, Watch)
    create_stack = blocking(AsyncClient.create_stack)
    list_stacks = blocking(AsyncClient.list_stacks)
    delete_stack = blocking(AsyncClient.delete_stack)
    list_allocations = blocking(AsyncClient.list_allocations)
