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
USER_NAME_CODE = 1
MA_CODE = 80
PROXY_STATE_CODE = 33
CALLING_STATION_CODE = 31
MAX_PACKET = 4096  # RFC 2865 section 3: the largest packet, request or reply
MAX_REPLY_MESSAGE = 253  # one attribute's value
# What a reply adds to the Proxy-State it copies back: header, Reply-Message, State and
# Message-Authenticator. A request whose Proxy-State leaves less room cannot be answered
# within MAX_PACKET, so it is dropped before anything is done for it.
REPLY_OVERHEAD = 20 + (2 + MAX_REPLY_MESSAGE) + (2 + 16) + (2 + 16)


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


def attributes(data: bytes) -> list[tuple[int, bytes]] | None:
    """The (type, value) attributes of a packet, or None if it is malformed.

    Stricter than pyrad, which takes up to 8192 bytes and cuts an attribute that runs
    past the end: RFC 2865 section 3 caps a packet at 4096 bytes, and every attribute's
    length must be 2 or more and end within the packet's Length (octets after Length
    are padding, ignored)."""
    if len(data) < 20 or len(data) > MAX_PACKET:
        return None
    (length,) = struct.unpack("!H", data[2:4])
    if length < 20 or length > len(data):
        return None
    found: list[tuple[int, bytes]] = []
    pos = 20
    while pos < length:
        if pos + 2 > length:
            return None
        kind, size = data[pos], data[pos + 1]
        if size < 2 or pos + size > length:
            return None
        found.append((kind, data[pos + 2 : pos + size]))
        pos += size
    return found


def parse(data: bytes, client: Client) -> AccessRequest | Outcome:
    """The checked request, or the Outcome for which it is dropped."""
    attrs = attributes(data)
    if attrs is None:
        return Outcome.MALFORMED
    kinds = [kind for kind, _ in attrs]
    # RFC 3579 section 3.2: at most one Message-Authenticator. Two User-Names leave it
    # open which user signs in: dropped too (docs/radius.md, "Audit log").
    if kinds.count(MA_CODE) > 1 or kinds.count(USER_NAME_CODE) > 1:
        return Outcome.MALFORMED
    if sum(len(value) + 2 for kind, value in attrs if kind == PROXY_STATE_CODE) > MAX_PACKET - REPLY_OVERHEAD:
        return Outcome.MALFORMED  # the reply, which copies the Proxy-State, would not fit
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
            user_name=_user_name(attrs),
            password=password,
            state=pkt.get(24, [None])[0],
            calling_station=_station(attrs),
        )
    except (rp.PacketError, ValueError, KeyError, UnicodeDecodeError):
        return Outcome.MALFORMED


def _first(attrs: list[tuple[int, bytes]], code: int) -> bytes | None:
    return next((value for kind, value in attrs if kind == code), None)


def _user_name(attrs: list[tuple[int, bytes]]) -> str | None:
    """The User-Name; None (a bad request) when absent or not UTF-8."""
    raw = _first(attrs, USER_NAME_CODE)
    try:
        return None if raw is None else raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _station(attrs: list[tuple[int, bytes]]) -> str | None:
    """The Calling-Station-Id as text: bytes that are not UTF-8 shown as \\xNN escapes."""
    raw = _first(attrs, CALLING_STATION_CODE)
    return None if raw is None else raw.decode("utf-8", errors="backslashreplace")


def reply(request: AccessRequest, code: int, message: str, state: bytes | None = None) -> bytes:
    """The encoded reply, with a Message-Authenticator (BlastRADIUS, CVE-2024-3596)."""
    out = request.packet.CreateReply()
    out.code = code
    out.AddAttribute("Reply-Message", message.encode()[:MAX_REPLY_MESSAGE].decode(errors="ignore"))
    if state is not None:
        out.AddAttribute("State", state)
    data = out.ReplyPacket()
    # parse() leaves room for this reply: a longer one would break RFC 2865 section 3.
    if len(data) > MAX_PACKET:
        raise ValueError(f"a reply of {len(data)} bytes is over {MAX_PACKET}")
    return data


def accept(request: AccessRequest, message: str) -> bytes:
    return reply(request, rp.AccessAccept, message)


def reject(request: AccessRequest, message: str) -> bytes:
    return reply(request, rp.AccessReject, message)


def challenge(request: AccessRequest, message: str, state: bytes) -> bytes:
    return reply(request, rp.AccessChallenge, message, state)
