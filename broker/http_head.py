"""The RP lane's request heads: a strict parser for the plain HTTP/1.1 requests of a
sign-in, and the request those handlers read (no I/O; broker/rp_lane.py moves bytes).

A sign-in's two RP requests, `POST /v1/challenges` and `GET /v1/challenges/{id}`,
are served off aiohttp's per-request machinery, which cost more broker CPU than
everything else on a sign-in's HTTP side (docs/performance.md, section 11). The
parser here does not try to be a second HTTP implementation. It takes one narrow,
unambiguous form and nothing else:

- the request line `POST /v1/challenges HTTP/1.1` or `GET /v1/challenges/<id>[?query]
  HTTP/1.1`, with an id and a query of plain characters (no percent-encoding), or a
  device's WebSocket upgrade, `GET /v1/device[?query] HTTP/1.1` (broker/rp_lane.py says
  why it is served here too);
- header lines `name: value`, the name a token, the value printable ASCII or tab,
  CRLF line ends, at most MAX_HEADERS of them and MAX_HEAD bytes in all;
- exactly one Host; at most one Content-Length of up to MAX_BODY bytes (none or 0 for
  GET); no Transfer-Encoding or Expect; Upgrade and `Connection: upgrade` only on the
  device route, and there each of Upgrade, Connection and the Sec-WebSocket-* headers
  at most once (the handshake's own checks, broker/wsframes.py, are the caller's).

Anything else (another route, HTTP/1.0, a chunked body, a folded or malformed line,
a non-ASCII byte, a head too long) is `HAND_OFF`: the connection goes to aiohttp with
every byte it sent, and aiohttp's own parser answers it exactly as it did before the
lane existed, errors included. So the lane never judges an odd request, and there is
no form two parsers could read differently (request smuggling needs one).
tests/test_broker_rp_lane.py checks that against aiohttp's own parser, on generated
requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

if TYPE_CHECKING:
    from aiohttp import web

    from .connections import Slot

# aiohttp refuses a request line or a header over 8190 bytes (431): a longer head is
# handed to it, to be refused there.
MAX_HEAD: Final = 8190
MAX_HEADERS: Final = 64
MAX_BODY: Final = 16 * 1024  # the RP API's JSON bodies, here and through aiohttp (broker/api.py)

_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Not allowed in a value here: controls but tab, DEL, and anything beyond ASCII.
_NOT_PLAIN = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f-\xff]")
_CHALLENGE_ID = re.compile(rb"/v1/challenges/([A-Za-z0-9_-]{1,128})")
_PLAIN_QUERY = re.compile(rb"[A-Za-z0-9_.=&-]*")
_DIGITS = re.compile(rb"[0-9]{1,6}")
_BARE_LF = re.compile(rb"(?<!\r)\n")
DEVICE_PATH: Final = "/v1/device"  # the device WebSocket (docs/protocol.md)
_DEVICE = DEVICE_PATH.encode()
# A device upgrade's headers that must come once: with two, which one a server reads is
# a matter of implementation, so such a request goes to aiohttp as it always did.
_ONCE = frozenset((b"upgrade", b"connection"))


class HandOff:
    """Not a lane request: aiohttp serves this connection from here on."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "HAND_OFF"


HAND_OFF: Final = HandOff()


@dataclass(frozen=True, slots=True)
class Head:
    route: str  # "create", "result" or "device"
    method: str
    target: str  # as sent: the path and query, for the access log
    path: str
    query: str
    params: dict[str, str]
    headers: list[tuple[str, str]]
    content_length: int
    keep_alive: bool
    length: int  # bytes of the head, its blank line included


def parse_head(buf: bytes | bytearray) -> Head | HandOff | None:
    """The request head at the start of `buf`: a Head, HAND_OFF, or None while it is
    incomplete. Decided as early as the bytes allow: another route is HAND_OFF as soon
    as its request line is in."""
    line_end = buf.find(b"\r\n")
    if line_end < 0:
        return _incomplete(buf)
    parts = bytes(buf[:line_end]).split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        return HAND_OFF
    method, target = parts[0], parts[1]
    path, _, query = target.partition(b"?")
    params: dict[str, str] = {}
    if method == b"POST" and path == b"/v1/challenges":
        route = "create"
    elif method == b"GET" and (m := _CHALLENGE_ID.fullmatch(path)) is not None:
        route = "result"
        params["id"] = m.group(1).decode()
    elif method == b"GET" and path == _DEVICE:
        route = "device"
    else:
        return HAND_OFF
    if not _PLAIN_QUERY.fullmatch(query):
        return HAND_OFF
    end = buf.find(b"\r\n\r\n", line_end)
    if end < 0:
        return _incomplete(buf)
    if end + 4 > MAX_HEAD:
        return HAND_OFF
    lines = bytes(buf[line_end + 2 : end]).split(b"\r\n") if end > line_end else []
    if len(lines) > MAX_HEADERS:
        return HAND_OFF
    headers: list[tuple[str, str]] = []
    content_length: int | None = None
    keep_alive = True
    hosts = 0
    device = route == "device"
    seen: set[bytes] = set()
    for line in lines:
        name, colon, value = line.partition(b":")
        # A name that is not a token covers a folded line (it starts with a space) and a
        # space before the colon, both of which parsers have read differently.
        if not colon or not _TOKEN.fullmatch(name):
            return HAND_OFF
        value = value.strip(b" \t")
        if _NOT_PLAIN.search(value):
            return HAND_OFF
        lname = name.lower()
        if lname in (b"transfer-encoding", b"expect") or (lname == b"upgrade" and not device):
            return HAND_OFF
        if device and (lname in _ONCE or lname.startswith(b"sec-websocket-")):
            if lname in seen:
                return HAND_OFF
            seen.add(lname)
        if lname == b"content-length":
            if content_length is not None or not _DIGITS.fullmatch(value):
                return HAND_OFF
            content_length = int(value)
        elif lname == b"host":
            hosts += 1
        elif lname == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"upgrade" in tokens and not device:
                return HAND_OFF
            if b"close" in tokens:
                keep_alive = False
        headers.append((name.decode(), value.decode()))
    if hosts != 1:
        return HAND_OFF  # HTTP/1.1 needs one (RFC 9112, 3.2): aiohttp answers 400
    content_length = content_length or 0
    if content_length > MAX_BODY or (route != "create" and content_length):
        return HAND_OFF  # aiohttp answers 413, or reads the GET's body as it always did
    return Head(
        route=route,
        method=method.decode(),
        target=target.decode(),
        path=path.decode(),
        query=query.decode(),
        params=params,
        headers=headers,
        content_length=content_length,
        keep_alive=keep_alive,
        length=end + 4,
    )


def _incomplete(buf: bytes | bytearray) -> HandOff | None:
    """A head that has not ended (None: wait for more), unless it never can end here. A
    bare LF ends no line for this parser, so a head sent with them would wait for the
    head timeout (408) where aiohttp answers 400 at once: it is handed over as it is."""
    if len(buf) > MAX_HEAD or _BARE_LF.search(buf):
        return HAND_OFF
    return None


@dataclass(slots=True)
class LaneRequest:
    """What the RP API's handlers read of a request, for one served by the lane: the
    same names and types as aiohttp's web.Request (headers, query, match_info, app,
    remote, content_type, content_length), and the whole body, already read."""

    head: Head
    body: bytes
    app: web.Application
    remote: str | None
    connection_slot: Slot | None = None  # its connection's count (broker/connections.py)
    headers: CIMultiDictProxy[str] = field(init=False)
    query: MultiDictProxy[str] = field(init=False)

    def __post_init__(self) -> None:
        self.headers = CIMultiDictProxy(CIMultiDict(self.head.headers))
        pairs = (p.partition("=") for p in self.head.query.split("&") if p)
        self.query = MultiDictProxy(MultiDict((k, v) for k, _, v in pairs))

    @property
    def method(self) -> str:
        return self.head.method

    @property
    def path(self) -> str:
        return self.head.path

    @property
    def match_info(self) -> dict[str, str]:
        return self.head.params

    @property
    def content_length(self) -> int:
        return self.head.content_length

    @property
    def content_type(self) -> str:
        """As aiohttp's: the media type, lower case, without parameters;
        application/octet-stream when the header is absent."""
        raw = self.headers.get("Content-Type")
        if raw is None:
            return "application/octet-stream"
        return raw.partition(";")[0].strip().lower()
