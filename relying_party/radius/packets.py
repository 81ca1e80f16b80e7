"""Access-Request in, Access-Accept / Reject / Challenge out: pyrad's encoding, our checks.

No I/O. A request is taken only from a known client, with a Message-Authenticator
that verifies with that client's secret (RFC 3579 section 3.2: it also proves the
secret, which the Request Authenticator of an Access-Request cannot). Everything
else is dropped without a reply, as RFC 2865 asks for packets that do not
authenticate: an answer would tell an attacker what it got wrong.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pyrad import packet as rp

from . import dictionary
from .config import Client
from .core import Outcome

ACCESS_REQUEST = rp.AccessRequest
MA_CODE = 80
MAX_REPLY_MESSAGE = 253  # one attribute's value


@dataclass(frozen=True, slots=True)
class Header:
    code: int
    identifier: int
    authenticator: bytes


def header(data: bytes) -> Header | None:
    """The fixed header, enough to find duplicates before decoding; None if too short."""
    if len(data) < 20:
        return None
    code, identifier, _length, authenticator = struct.unpack("!BBH16s", data[:20])
    return Header(code, identifier, authenticator)


@dataclass(frozen=True, slots=True)
class AccessRequest:
    packet: rp.AuthPacket
    client: Client
    user_name: str | None
    password: str | None  # the first factor, or the answer typed at the challenge prompt
    state: bytes | None
    calling_station: str | None

    @property
    def authenticator(self) -> bytes:
        return self.packet.authenticator


def parse(data: bytes, client: Client) -> AccessRequest | Outcome:
    """The checked request, or the Outcome for which it is dropped."""
    pkt = rp.AuthPacket(secret=client.secret, dict=dictionary.load())
    try:
        pkt.DecodePacket(data)
    except (rp.PacketError, ValueError, KeyError, IndexError, struct.error):
        return Outcome.MALFORMED
    if pkt.code != ACCESS_REQUEST:
        return Outcome.MALFORMED
    if not pkt.message_authenticator or len(pkt.get(MA_CODE, [b""])[0]) != 16:
        return Outcome.NO_MESSAGE_AUTHENTICATOR
    if not pkt.verify_message_authenticator():
        return Outcome.BAD_MESSAGE_AUTHENTICATOR
    try:
        password = None
        if "User-Password" in pkt:
            password = pkt.PwDecrypt(pkt.get(2)[0])
        return AccessRequest(
            packet=pkt,
            client=client,
            user_name=_text(pkt, "User-Name"),
            password=password,
            state=pkt.get(24, [None])[0],
            calling_station=_text(pkt, "Calling-Station-Id"),
        )
    except (rp.PacketError, ValueError, KeyError, UnicodeDecodeError):
        return Outcome.MALFORMED


def _text(pkt: rp.AuthPacket, name: str) -> str | None:
    values = pkt.get(name)
    return str(values[0]) if values else None


def reply(request: AccessRequest, code: int, message: str, state: bytes | None = None) -> bytes:
    """The encoded reply, with a Message-Authenticator (BlastRADIUS, CVE-2024-3596)."""
    out = request.packet.CreateReply()
    out.code = code
    out.AddAttribute("Reply-Message", message.encode()[:MAX_REPLY_MESSAGE].decode(errors="ignore"))
    if state is not None:
        out.AddAttribute("State", state)
    return out.ReplyPacket()


def accept(request: AccessRequest, message: str) -> bytes:
    return reply(request, rp.AccessAccept, message)


def reject(request: AccessRequest, message: str) -> bytes:
    return reply(request, rp.AccessReject, message)


def challenge(request: AccessRequest, message: str, state: bytes) -> bytes:
    return reply(request, rp.AccessChallenge, message, state)
