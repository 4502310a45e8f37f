"""TLS for ``wss://``: contexts from certificate files, and self-signed certificates.

A self-signed certificate is for local use and tests: clients must be told
to trust it explicitly (:func:`client_ssl_context` with ``cafile``, or
``NODE_EXTRA_CA_CERTS`` for Node.js peers).

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> cert, key = make_self_signed_certificate(os.path.join(d, "c.pem"), os.path.join(d, "k.pem"))
>>> server_ssl_context(cert, key).protocol.name
'PROTOCOL_TLS_SERVER'
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["client_ssl_context", "make_self_signed_certificate", "server_ssl_context"]

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


def make_self_signed_certificate(
    cert_file: str | os.PathLike[str],
    key_file: str | os.PathLike[str],
    *,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = 365,
) -> tuple[str, str]:
    """Write a self-signed certificate and its private key (PEM) for ``hosts``.

    Missing parent directories are created; the key file is readable by its
    owner only. Returns both paths.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")])
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = os.fspath(key_file), os.fspath(cert_file)
    for path in (key_path, cert_path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_ssl_context(
    cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]
) -> ssl.SSLContext:
    """An ``SSLContext`` for a ``wss://`` server from PEM certificate and key files."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(os.fspath(cert_file), os.fspath(key_file))
    return context


def client_ssl_context(cafile: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """An ``SSLContext`` for a client; ``cafile`` adds a certificate to trust."""
    context = ssl.create_default_context()
    if cafile is not None:
        context.load_verify_locations(os.fspath(cafile))
    return context
