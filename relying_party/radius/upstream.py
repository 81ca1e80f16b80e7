"""The first factor in mode "upstream": the user's password, checked by another RADIUS server.

The Access-Request is made anew for the upstream server with pyrad (its own
identifier, authenticator and Message-Authenticator, the password hidden with the
upstream secret), and its reply is taken only if it verifies with that secret,
Message-Authenticator included (pyrad's VerifyReply with enforce_ma: BlastRADIUS).
"""

from __future__ import annotations

import asyncio
import contextlib

from pyrad import packet as rp

from . import dictionary
from .config import Upstream


class UpstreamUnavailable(Exception):
    """No verified reply from the upstream server within its timeout and retries."""


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, request: rp.AuthPacket) -> None:
        self.request = request
        self.reply: asyncio.Future[rp.Packet] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.reply.done():
            return
        try:
            reply = self.request.CreateReply(packet=data)
        except (rp.PacketError, ValueError, KeyError):
            return  # not a RADIUS packet: keep waiting for the real one
        if self.request.VerifyReply(reply, data, enforce_ma=True):
            self.reply.set_result(reply)

    def error_received(self, exc: Exception) -> None:
        pass  # e.g. ICMP port unreachable: the retry or the timeout decides


async def check_password(upstream: Upstream, user_name: str, password: str, nas_id: str) -> bool:
    """True on Access-Accept, False on Access-Reject (or an Access-Challenge, which this
    server cannot relay); UpstreamUnavailable when no verified reply comes."""
    request = rp.AuthPacket(
        code=rp.AccessRequest, secret=upstream.secret, dict=dictionary.load(), message_authenticator=True
    )
    request["User-Name"] = user_name
    request["User-Password"] = request.PwCrypt(password)
    request["NAS-Identifier"] = nas_id
    data = request.RequestPacket()
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _Exchange(request), remote_addr=(upstream.host, upstream.port)
        )
    except OSError as exc:
        raise UpstreamUnavailable(f"upstream {upstream.host}:{upstream.port}: {exc.strerror}") from None
    try:
        for _ in range(1 + upstream.retries):
            transport.sendto(data)
            with contextlib.suppress(TimeoutError):
                reply = await asyncio.wait_for(asyncio.shield(protocol.reply), upstream.timeout)
                return reply.code == rp.AccessAccept
        raise UpstreamUnavailable(
            f"upstream {upstream.host}:{upstream.port}: no verified reply in "
            f"{1 + upstream.retries} tries of {upstream.timeout:g} s"
        )
    finally:
        transport.close()
