"""deploy/haproxy.cfg's TLS, run by a real HAProxy on its own TLS bind line (a test
certificate as its `crt`): what Debian's default haproxy.cfg sets, which the file
replaces. TLS 1.3 with ALPN http/1.1 for pushauth's clients; TLS 1.2 only with
forward-secret AEAD ciphers (no RSA key exchange, no CBC) and without session tickets.
No broker node is needed: only handshakes, which HAProxy answers itself.
"""

from __future__ import annotations

import datetime
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from support import LOCALHOST, free_port
from support.haproxy import SHIPPED, HAProxyProcess, frontends

FRONTEND = "pushauth"
HOST = "localhost"


@pytest.fixture(scope="module")
def lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HAProxyProcess, Path]]:
    directory = tmp_path_factory.mktemp("haproxy-tls")
    certificate = _self_signed(directory / "lb.pem")
    config = SHIPPED.read_text()
    haproxy = HAProxyProcess(
        log_dir=directory,
        config=config,
        binds={name: free_port() for name in frontends(config)},
        servers={"a": f"{LOCALHOST}:{free_port()}", "b": f"{LOCALHOST}:{free_port()}"},
        certificate=certificate,
    )
    try:
        yield haproxy.start(), certificate
    finally:
        haproxy.cleanup()


def test_tls_is_forward_secret_and_ticketless(lb: tuple[HAProxyProcess, Path]) -> None:
    haproxy, certificate = lb
    with _handshake(haproxy, certificate) as conn:  # what pushauth's own clients do
        assert (conn.version(), conn.selected_alpn_protocol()) == ("TLSv1.3", "http/1.1")
    with _handshake(haproxy, certificate, "ECDHE-RSA-AES128-GCM-SHA256") as conn:
        assert conn.version() == "TLSv1.2"
        assert conn.session is not None and not conn.session.has_ticket
    # RSA key exchange (no forward secrecy), and CBC with SHA-1: refused.
    for cipher in ("AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA"):
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
            _handshake(haproxy, certificate, cipher).close()


def _handshake(haproxy: HAProxyProcess, certificate: Path, tls12_cipher: str | None = None) -> ssl.SSLSocket:
    """A verified TLS connection to the shipped frontend; with `tls12_cipher`, TLS 1.2
    offering only that cipher."""
    context = ssl.create_default_context(cafile=certificate)
    context.set_alpn_protocols(["http/1.1"])
    if tls12_cipher is not None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(tls12_cipher)
    sock = socket.create_connection((LOCALHOST, haproxy.binds[FRONTEND]), timeout=30)
    try:
        return context.wrap_socket(sock, server_hostname=HOST)
    except BaseException:
        sock.close()
        raise


def _self_signed(path: Path) -> Path:
    """An RSA certificate for HOST with its key, in one PEM file as HAProxy's `crt` takes
    it (RSA: the ECDHE-RSA ciphers above need an RSA key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    return path
