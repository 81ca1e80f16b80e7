"""otpauth:// URIs (Google's Key Uri Format), the lingua franca of authenticator QR codes.

    otpauth://TYPE/[ISSUER:]NAME?secret=BASE32[&issuer=ISSUER][&algorithm=SHA1]
        [&digits=6][&period=30][&counter=N]

Parsing tolerates what real apps and services write: lower-case, padded or spaced
secrets, a label with or without the issuer prefix, an issuer parameter that
differs from the prefix (the parameter wins), a literal or %3A-encoded colon,
"+" or %20 for spaces in parameters, algorithm names such as "sha1" or
"SHA-256", parameter names in any case, and unknown extra parameters (image=...).
A link wrapped across lines (pasted from an e-mail or a terminal) is read as the link:
line breaks, the spaces and tabs beside them, and tabs are removed first, as for an
enrollment link (protocol.uri.unwrap, docs/protocol.md 11.1).
Not tolerated: %-escapes in the label or a parameter read that are not UTF-8 text,
which would otherwise become U+FFFD ("A: \ufffd\ufffd") without a word.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

from protocol.uri import unwrap

from ..accounts_model import InvalidAccount, OtpAccount, decode_base32_secret, encode_base32_secret
from ..accounts_model import normalize_algorithm as _normalize_algorithm
from .report import ExportResult, ImportErrorCode, ImportSourceError

SCHEME = "otpauth"
MAX_URI_CHARS = 4096


def _invalid(reason: str) -> ImportSourceError:
    return ImportSourceError(ImportErrorCode.INVALID_ACCOUNT, reason)


def _text(raw: str, what: str, *, strict: bool = True) -> str:
    """`raw` percent-decoded; escapes that are not UTF-8 text are refused (`strict`), or
    (for a refusal's label only) shown as U+FFFD."""
    try:
        return unquote(raw, errors="strict" if strict else "replace")
    except UnicodeDecodeError:
        raise _invalid(f"the {what} {raw!r} has %-escapes that are not UTF-8 text") from None


def _query(query: str) -> dict[str, str]:
    """The parameters by name, their values still escaped (_param decodes one when it
    is read: an unknown parameter is never decoded, so it cannot spoil the URI)."""
    params: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        key = unquote(key).strip().lower()
        if key in params:
            raise _invalid(f"parameter {key!r} is given twice")
        params[key] = value
    return params


def _param(params: dict[str, str], key: str, *, strict: bool = True) -> str:
    """The decoded value of parameter `key` ("" when absent), "+" read as a space."""
    return _text(params.get(key, "").replace("+", " "), key, strict=strict)


def _int_param(params: dict[str, str], key: str, default: int) -> int:
    text = _param(params, key).strip()
    if not text:
        return default
    # ASCII digits only: isdecimal() alone takes other scripts' digits ("\u0666" is 6),
    # which no service writes and other readers (the web authenticator's) do not take.
    if not (text.isascii() and text.isdecimal()):
        raise _invalid(f"{key} must be a whole number, not {text!r}")
    return int(text)


def _split_label(path: str, issuer_param: str, *, strict: bool = True) -> tuple[str, str]:
    """(issuer prefix, name) from the URI path; the prefix is "" when there is none.

    The prefix ends at the first colon, unless the label starts with the issuer
    parameter and a colon: then an issuer that itself holds a colon stays whole.
    """
    label = _text(path.removeprefix("/"), "label", strict=strict).strip()
    if issuer_param and label.startswith(issuer_param + ":"):
        return issuer_param, label[len(issuer_param) + 1 :].strip()
    prefix, sep, rest = label.partition(":")
    if not sep:
        return "", label
    return prefix.strip(), rest.strip()


def parse_uri(text: str) -> OtpAccount:
    """Parse one otpauth:// URI; raises ImportSourceError(INVALID_ACCOUNT) with the reason."""
    text = unwrap(text).strip()
    if len(text) > MAX_URI_CHARS:
        raise _invalid(f"the URI is longer than {MAX_URI_CHARS} characters")
    try:
        parts = urlsplit(text)
    except ValueError:
        raise _invalid("not a well-formed URI") from None
    if parts.scheme.lower() != SCHEME:
        raise _invalid("not an otpauth:// URI")
    kind = parts.netloc.lower()
    if kind not in ("totp", "hotp"):
        raise _invalid(f"unsupported token type {kind!r} (only totp and hotp)")
    params = _query(parts.query)
    issuer_param = _param(params, "issuer").strip()
    prefix, name = _split_label(parts.path, issuer_param)
    issuer = issuer_param or prefix
    if "secret" not in params:
        raise _invalid("the URI has no secret")
    try:
        return OtpAccount(
            secret=decode_base32_secret(_param(params, "secret")),
            name=name,
            issuer=issuer,
            kind=kind,
            algorithm=_normalize_algorithm(_param(params, "algorithm") or "SHA1"),
            digits=_int_param(params, "digits", 6),
            period=_int_param(params, "period", 30),
            # The spec requires a counter for HOTP, but some exporters leave out counter=0.
            counter=_int_param(params, "counter", 0),
        )
    except InvalidAccount as exc:
        raise _invalid(str(exc)) from None


def describe(text: str) -> str:
    """A best-effort label for an otpauth:// URI that may be invalid (for refusals)."""
    try:
        parts = urlsplit(unwrap(text).strip())
    except ValueError:
        return "?"
    try:
        issuer_param = _param(_query(parts.query), "issuer", strict=False).strip()
    except ImportSourceError:
        issuer_param = ""
    prefix, name = _split_label(parts.path, issuer_param, strict=False)
    issuer = issuer_param or prefix
    label = f"{issuer}: {name}" if issuer and name else issuer or name
    return label or "?"


def to_uri(account: OtpAccount) -> str:
    """The otpauth:// URI for `account`, with every parameter spelled out.

    Spaces are written as %20 (not "+"), which every reader decodes the same way.
    """
    label = quote(account.name, safe="@")
    if account.issuer:
        label = f"{quote(account.issuer, safe='@')}:{label}"
    elif ":" in account.name:
        label = f":{label}"  # an empty issuer prefix, so the name's own colon is not read as one
    params = [("secret", encode_base32_secret(account.secret))]
    if account.issuer:
        params.append(("issuer", account.issuer))
    params += [("algorithm", account.algorithm), ("digits", str(account.digits))]
    if account.kind == "totp":
        params.append(("period", str(account.period)))
    else:
        params.append(("counter", str(account.counter)))
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params)
    return f"{SCHEME}://{account.kind}/{label}?{query}"


def export_uris(accounts: Iterable[OtpAccount]) -> ExportResult:
    """One URI per account; the format holds every account we can hold, so none is refused."""
    return ExportResult([to_uri(a) for a in accounts], [])
