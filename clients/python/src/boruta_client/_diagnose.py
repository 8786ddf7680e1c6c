"""Why a scheduler that answers on its port is "unavailable": a probe of what TLS it
speaks, compared with what the client used, so the error says what to set instead of
"cannot reach". Runs only after a call failed UNAVAILABLE; blocking (run it in a thread)."""

from __future__ import annotations

import socket
import ssl

from boruta.address import AddressError, split_host_port

from boruta_client.config import Context

PROBE_TIMEOUT = 3.0
# An HTTP/2 client preface and an empty SETTINGS frame: enough for a TLS server that wants
# a client certificate to say so (TLS 1.3 refuses it only after the handshake).
_H2_HELLO = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SET_CERTS = (
    "set ca, cert and key (BORUTA_CA, BORUTA_CERT and BORUTA_KEY, or tls=TlsFiles(...)), "
    "or point BORUTA_CONFIG at a config file whose context has them"
)


def _split(target: str) -> tuple[str, int] | None:
    # A target gRPC understands but this probe does not (dns:///..., unix:...) is not probed.
    try:
        host, port = split_host_port(target, "scheduler", listen=True)
    except AddressError:
        return None
    return (host or "localhost", port) if port else None


def _handshake(host: str, port: int, context: ssl.SSLContext) -> str:
    """What the server did with our TLS hello: "plaintext" (it does not speak TLS),
    "certificate" (it wants a client certificate we did not show or it did not take),
    "refused" (it failed our checks of its certificate), "tls"; "" if unreachable."""
    try:
        sock = socket.create_connection((host, port), timeout=PROBE_TIMEOUT)
    except OSError:
        return ""
    with sock:
        try:
            tls = context.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError:
            return "refused"
        except ssl.SSLError as exc:
            return "certificate" if "ALERT" in (exc.reason or "") else "plaintext"
        except OSError:
            return "plaintext"
        with tls:
            try:
                tls.sendall(_H2_HELLO)
                answer = tls.recv(1)
            except ssl.SSLError as exc:
                return "certificate" if "ALERT" in (exc.reason or "") else "tls"
            except TimeoutError:
                return "tls"  # slow, not refusing: nothing to say about certificates
            except OSError:
                return "certificate"
    # gRPC's server answers an HTTP/2 hello with its SETTINGS; when it wanted a client
    # certificate and did not get one it takes, it hangs up instead, without an alert.
    return "tls" if answer else "certificate"


def _tls_context(ca: str = "", cert: str = "", key: str = "") -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_alpn_protocols(["h2"])
    if ca:
        context.load_verify_locations(ca)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert and key:
        context.load_cert_chain(cert, key)
    return context


def explain(target: str, settings: Context) -> str | None:
    """A sentence on the TLS mismatch between this client and the scheduler, or None when
    there is none to see (then it really is unreachable, or something else failed)."""
    address = _split(target)
    if address is None:
        return None
    try:
        server = _handshake(*address, _tls_context())
        if server in ("", "plaintext"):
            if server == "plaintext" and (settings.cert or settings.token_file or settings.bearer):
                return (
                    f"the scheduler at {target} does not use TLS (a plaintext demo "
                    "scheduler?), but this client does: call it without ca, cert, key "
                    "and token"
                )
            return None
        uses_cert = bool(settings.cert and settings.key)
        uses_token = bool(settings.bearer or settings.token_file)
        if not uses_cert and not uses_token:
            if server == "certificate":
                return (
                    f"the scheduler at {target} requires TLS and a client certificate, "
                    f"and this client called it in plaintext: {_SET_CERTS}"
                )
            return (
                f"the scheduler at {target} requires TLS (it is a token port), and this "
                "client called it in plaintext: set token and ca (BORUTA_TOKEN and "
                "BORUTA_CA, or a context with token_file and ca in BORUTA_CONFIG)"
            )
        if server == "certificate" and not uses_cert:
            return (
                f"the scheduler at {target} requires a client certificate on this port, "
                "so the token was not sent: tokens go to the scheduler's token port (its "
                "--listen-tokens address); or use a certificate instead of the token"
            )
        mine = _tls_context(settings.ca, settings.cert if uses_cert else "", settings.key)
        checked = _handshake(*address, mine)
    except (OSError, ValueError) as exc:
        return (
            f"the scheduler at {target} speaks TLS, but the client's TLS files are unusable: {exc}"
        )
    if checked == "refused":
        return (
            f"the scheduler at {target} showed a certificate that the CA {settings.ca or '(none)'} "
            f"did not issue for {address[0]}: is ca the farm's CA certificate?"
        )
    if checked == "certificate":
        return (
            f"the scheduler at {target} refused the client certificate {settings.cert}: it "
            "is not issued by the farm's CA, or it has expired (schedctl pki issue)"
        )
    return None
