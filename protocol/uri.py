"""The enrollment URI shown as a QR code: build and strict parse.

    pushauth://enroll?v=2&broker=<ws(s) URL>&token=<token>&rp=<rp id>
        &rp_name=<display name>&account=<label>[&recoverable=1][&es=<base64url>]
        [&secret=<base32>&algorithm=SHA1|SHA256|SHA512&digits=6|8&period=<s>]

The TOTP part and `es` (the RP's enrollment-binding secret) are added by the RP
itself, to the link the broker made: the broker never sees them. docs/protocol.md
gives the grammar (ABNF).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass, replace
from urllib.parse import SplitResult, unquote, urlencode, urlsplit

from . import b64
from .errors import ErrorCode, ProtocolError
from .fields import ID_RE, ID_RE_LONG

SCHEME = "pushauth"
URI_VERSION = "2"  # 2: `es` and `recoverable` (protocol version 2)
BINDING_SECRET_BYTES = 32
ALGORITHMS = ("SHA1", "SHA256", "SHA512")
_BASE32_RE = re.compile(r"^[A-Z2-7]+=*$")
_NUMBER_RE = re.compile(r"[0-9]{1,9}")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class TotpParams:
    secret: str  # base32, upper case, no padding
    algorithm: str = "SHA1"
    digits: int = 6
    period: int = 30


@dataclass(frozen=True, slots=True)
class EnrollmentURI:
    broker: str
    token: str
    rp: str
    rp_name: str
    account: str
    totp: TotpParams | None = None
    recoverable: bool = False
    binding_secret: bytes | None = None  # `es`: made by the RP, never seen by the broker

    def build(self) -> str:
        q: list[tuple[str, str]] = [
            ("v", URI_VERSION),
            ("broker", self.broker),
            ("token", self.token),
            ("rp", self.rp),
            ("rp_name", self.rp_name),
            ("account", self.account),
        ]
        if self.recoverable:
            q.append(("recoverable", "1"))
        if self.binding_secret is not None:
            q.append(("es", b64.encode(self.binding_secret)))
        if self.totp is not None:
            t = self.totp
            q += [
                ("secret", t.secret),
                ("algorithm", t.algorithm),
                ("digits", str(t.digits)),
                ("period", str(t.period)),
            ]
        return f"{SCHEME}://enroll?{urlencode(q)}"

    def with_totp(self, totp: TotpParams) -> EnrollmentURI:
        return replace(self, totp=totp)

    def with_binding_secret(self, secret: bytes) -> EnrollmentURI:
        return replace(self, binding_secret=secret)


def split_url(text: str) -> SplitResult | None:
    """`text` split as a URL, or None when it is not one: urllib raises ValueError for a
    malformed IPv6 host ("ws://[::1") and for a port that is not a number in 0..65535.
    Every place that reads a broker URL from a link or from the user goes through here,
    so such a URL is refused with a message, never a traceback."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises on a malformed or out-of-range port)
    except ValueError:
        return None
    return parts


# Schemes that carry the broker's traffic in clear (the HTTP API shares the
# WebSocket's host and port, so http:// is as exposed as ws://).
PLAINTEXT_SCHEMES = ("ws", "http")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or the name `localhost` (docs/protocol.md, section 2.1)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name: it may resolve anywhere


def insecure_transport(broker: str) -> str | None:
    """Why a device must not talk to `broker` (a ws:// or http:// URL whose host is not
    loopback: section 2.1 requires TLS elsewhere), or None. A device checks this
    before it connects or sends anything; `parse` accepts such links (an RP or a test
    on loopback builds them), the device refuses them."""
    parts = split_url(broker)
    if parts is None:
        return f"the broker URL {broker} is malformed; nothing was sent"
    if parts.scheme.lower() not in PLAINTEXT_SCHEMES:
        return None
    if parts.hostname is not None and is_loopback(parts.hostname):
        return None
    secure = "wss" if parts.scheme.lower() == "ws" else "https"
    return (
        f"the broker URL {broker} is not encrypted: {secure}:// is required for any host but this "
        f"computer (127.0.0.1, ::1, localhost); nothing was sent"
    )


def _bad(why: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_URI, f"not a valid enrollment URI: {why}")


# What a parser removes around a link (pasted with a line break, say): ASCII white space
# only, as the spec says. str.strip() also removed U+001C..U+001F and U+0085 and kept a
# byte-order mark, and JavaScript's trim() the other way round: two readings of one text.
ASCII_WHITESPACE = " \t\n\r\f"


# What wrapping puts into a link copied from text (an e-mail, a terminal; docs/protocol.md
# 11.1, after RFC 3986 Appendix C: white space in a URI extracted from text is removed):
# a line break (CR, LF) with the spaces and tabs on either side of it (a mail client's
# soft break " \r\n", an indented next line), and any tab (urllib's urlsplit and the WHATWG
# URL parser drop tabs and line breaks anywhere). A space elsewhere stays: no link of ours
# has one (the builder writes "+"), and a parser reads it as a space, as it always did.
_WRAPPING = re.compile(r"[ \t]*[\r\n][\r\n \t]*|\t")


def unwrap(text: str) -> str:
    """`text` as one link: the white space of a wrapped line removed (see _WRAPPING)."""
    return _WRAPPING.sub("", text)


def parse(text: str) -> EnrollmentURI:
    text = unwrap(text).strip(ASCII_WHITESPACE)
    if len(text) > 2048:
        raise _bad("too long")
    # Checked on the text itself, as the web app does: urlsplit skips leading C0
    # controls (U+001C...), which another parser refuses. The scheme in any case (RFC
    # 3986 section 3.1), the rest exactly.
    if text[: len(SCHEME)].lower() != SCHEME or not text.startswith("://enroll?", len(SCHEME)):
        raise _bad("expected pushauth://enroll?...")
    parts = split_url(text)
    if parts is None or parts.scheme != SCHEME or parts.netloc != "enroll":
        raise _bad("expected pushauth://enroll?...")
    q: dict[str, str] = {}
    for key, value in _pairs(parts.query):
        if key in q:
            raise _bad(f"parameter {key!r} given twice")
        q[key] = value
    if q.get("v") != URI_VERSION:
        raise _bad(f"unsupported or missing version (this agent reads v={URI_VERSION}; is it up to date?)")
    for key in ("broker", "token", "rp", "rp_name", "account"):
        if not q.get(key):
            raise _bad(f"missing {key!r}")
    broker = split_url(q["broker"])
    if broker is None or broker.scheme not in ("ws", "wss") or not broker.hostname:
        raise _bad("broker must be a ws:// or wss:// URL with a host")
    if broker.username is not None or broker.password is not None or broker.fragment:
        raise _bad("broker URL must not carry user info or a fragment")
    if not ID_RE_LONG.fullmatch(q["token"]):
        raise _bad("malformed token")
    if not ID_RE.fullmatch(q["rp"]):
        raise _bad("malformed rp id")
    if len(q["rp_name"]) > 256 or len(q["account"]) > 256:
        raise _bad("rp_name and account are at most 256 characters")
    recoverable = q.get("recoverable", "0")
    if recoverable not in ("0", "1"):
        raise _bad("recoverable must be 0 or 1")
    secret = None
    if "es" in q:
        try:
            secret = b64.decode(q["es"])
        except ValueError:
            secret = b""
        if len(secret) != BINDING_SECRET_BYTES:
            raise _bad(f"es must be {BINDING_SECRET_BYTES} bytes in base64url")
    totp = None
    if "secret" in q:
        totp = parse_totp(q)
    elif {"algorithm", "digits", "period"} & q.keys():
        raise _bad("TOTP parameters without a secret")
    return EnrollmentURI(
        q["broker"],
        q["token"],
        q["rp"],
        q["rp_name"],
        q["account"],
        totp,
        recoverable=recoverable == "1",
        binding_secret=secret,
    )


# What a refusal calls a parameter whose value is not UTF-8 text: the two labels the
# device shows by their meaning (docs/protocol.md, section 11.1).
_SHOWN_AS = {"account": "the account name", "rp_name": "the service name"}


def _pairs(query: str) -> list[tuple[str, str]]:
    """The query's (name, value) pairs as application/x-www-form-urlencoded reads them
    (urllib's parse_qsl: split at "&", empty pieces skipped, each piece at its first "="),
    but a "%" must start an escape and the bytes must be UTF-8 (as the web app's parser,
    decodeURIComponent, has it); a value that is not is refused by its parameter's name,
    never shown with U+FFFD in its place."""
    pairs = []
    for piece in query.split("&"):
        if not piece:
            continue
        raw_key, _, raw_value = piece.partition("=")
        key = _form_decode(raw_key, "a parameter name")
        what = _SHOWN_AS.get(key, f"parameter {key!r}")
        pairs.append((key, _form_decode(raw_value, what)))
    return pairs


def _form_decode(raw: str, what: str) -> str:
    if _BAD_PERCENT.search(raw):
        raise _bad(f"{what} in the link is not valid percent-encoded UTF-8 (a % that starts no escape)")
    try:
        return unquote(raw.replace("+", " "), errors="strict")
    except UnicodeDecodeError:
        raise _bad(f"{what} in the link is not valid UTF-8") from None


def parse_totp(q: dict[str, str]) -> TotpParams:
    secret = q["secret"].upper().replace(" ", "").rstrip("=")
    if not secret or not _BASE32_RE.fullmatch(secret):
        raise _bad("TOTP secret is not base32")
    try:
        raw = base64.b32decode(secret + "=" * (-len(secret) % 8))
    except (binascii.Error, ValueError):
        raise _bad("TOTP secret is not base32") from None
    if len(raw) < 10:
        raise _bad("TOTP secret shorter than 80 bits")
    algorithm = q.get("algorithm", "SHA1").upper()
    if algorithm not in ALGORITHMS:
        raise _bad(f"TOTP algorithm must be one of {ALGORITHMS}")
    digits_text, period_text = q.get("digits", "6"), q.get("period", "30")
    # int() alone would also take " 6", "+6", "0_6" and non-ASCII digits.
    if not _NUMBER_RE.fullmatch(digits_text) or not _NUMBER_RE.fullmatch(period_text):
        raise _bad("TOTP digits and period are integers")
    digits, period = int(digits_text), int(period_text)
    if digits not in (6, 8):
        raise _bad("TOTP digits must be 6 or 8")
    if not 1 <= period <= 3600:
        raise _bad("TOTP period must be 1..3600 seconds")
    return TotpParams(secret, algorithm, digits, period)
