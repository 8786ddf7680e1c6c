"""What Client and AsyncClient share: the constructor, which finds the farm the way
schedctl does, and the channel credentials that follow from what it found."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from boruta.tls import TlsFiles, channel_credentials

from boruta_client._rpc import Identity, login_name
from boruta_client.config import Context, find_farm, with_overrides
from boruta_client.errors import InvalidArgument

# How long a client keeps retrying a call answered UNAVAILABLE, at most: long enough for a
# standby to take over or a scheduler to restart, short enough to report a farm that is down.
FAILOVER_TIMEOUT = 10.0


class ClientBase:
    """The connection settings of a client: ``context`` (where the scheduler is and who
    you are, after the config file, environment and arguments), ``identity``, ``tls``.
    ``target`` is one scheduler address or several (a list, or separated by commas): the
    client calls the leader among them and follows it when another takes over."""

    context: Context
    target: str
    tls: TlsFiles | None
    call_timeout: float
    failover_timeout: float

    def __init__(
        self,
        target: str | Sequence[str] | None = None,
        *,
        user: str | None = None,
        groups: Iterable[str] | None = None,
        admin: bool | None = None,
        tls: TlsFiles | None = None,
        token: str | None = None,
        ca: str | None = None,
        call_timeout: float = 30.0,
        failover_timeout: float = FAILOVER_TIMEOUT,
        context: str | Context = "",
        config: str | os.PathLike[str] | None = None,
    ) -> None:
        """Settings not given come from where schedctl takes them: the config file
        (``config``, else BORUTA_CONFIG, else ~/.config/boruta/config.toml), its context
        (``context``, else BORUTA_CONTEXT, else the file's current one) and the BORUTA_*
        variables over it. A Context given as ``context`` is used as it is.

        A call answered UNAVAILABLE (no scheduler reachable, a standby, a restart) is
        retried on the leader or the next address, with backoff, for up to
        ``failover_timeout`` seconds (and within the call's own timeout)."""
        given: dict[str, Any] = {
            "scheduler": target,
            "user": user or None,
            "groups": None if groups is None else tuple(groups),
            "admin": admin,
            "ca": ca,
            "bearer": token,
        }
        if tls is not None:
            given.update(ca=tls.ca, cert=tls.cert, key=tls.key)
        if isinstance(context, Context):
            self.context = with_overrides(context, given)
        else:
            self.context = find_farm(config, context, given)[1]
        self.target = self.context.scheduler
        self.tls = self.context.tls()
        # With TLS the scheduler knows the caller by its certificate, and user, groups
        # and admin are ignored; without, it takes them as given (loopback demos only).
        self._identity = (
            None
            if self.tls is not None
            else Identity(
                self.context.user or login_name(), self.context.groups, self.context.admin
            )
        )
        self.call_timeout = call_timeout
        self.failover_timeout = failover_timeout
        self._open()

    @property
    def identity(self) -> Identity:
        """Who the scheduler takes this client for. With TLS it is read from the
        certificate when first asked (reading one loads cryptography, a tenth of a second
        that commands which never ask need not pay)."""
        if self._identity is None:
            assert self.tls is not None
            self._identity = Identity.of_certificate(self.tls.cert)
        return self._identity

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        """The identity a call states: none with TLS, where the certificate says it."""
        return () if self.tls is not None else self.identity.metadata()

    def _open(self) -> None:
        """Set up what the subclass needs once the settings are known."""

    def _credentials(self) -> grpc.ChannelCredentials | None:
        """TLS with our certificate, or TLS plus a bearer token (the scheduler's token port),
        or None for a plaintext demo scheduler."""
        if self.tls is not None:
            return channel_credentials(self.tls)
        token = self.context.token()
        if token is None:
            return None
        ca = self.context.ca
        try:
            roots = open(ca, "rb").read() if ca else None  # noqa: SIM115 - read at once
        except OSError as exc:
            raise InvalidArgument(f"cannot read the CA certificate {ca}: {exc}") from None
        return grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(root_certificates=roots),
            grpc.access_token_call_credentials(token),
        )
