"""deploy/haproxy.cfg's TLS, run by a real HAProxy on its own TLS bind line (a test
certificate as its `crt`): what Debian's default haproxy.cfg sets, which the file
replaces. TLS 1.3 with ALPN http/1.1 for pushauth's clients; TLS 1.2 only with
forward-secret AEAD ciphers (no RSA key exchange, no CBC) and without session tickets.
No broker node is needed: only handshakes, which HAProxy answers itself.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import LOCALHOST, free_port
from support.certs import self_signed
from support.haproxy import SHIPPED, HAProxyProcess, frontends

FRONTEND = "pushauth"
HOST = "localhost"


@pytest.fixture(scope="module")
def lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HAProxyProcess, Path]]:
    directory = tmp_path_factory.mktemp("haproxy-tls")
    certificate = self_signed(directory / "lb.pem", HOST, rsa_key=True)  # RSA: the ECDHE-RSA ciphers tested
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
