"""Per-job RSA keys: the private half goes to the scheduler, the public half to sshd."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True, slots=True)
class JobKey:
    """A fresh key pair; private_pem is secret and must never be logged or stored."""

    private_pem: str = field(repr=False)
    public_openssh: str


def generate_job_key(bits: int, comment: str) -> JobKey:
    """A new RSA key; the private half in PEM that both OpenSSH and paramiko read."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return JobKey(private_pem, f"{public.decode()} {comment}")
