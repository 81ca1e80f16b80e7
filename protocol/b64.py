"""base64url without padding: how binary values travel in JSON and URIs."""

from __future__ import annotations

import base64
import binascii
import re

_RE = re.compile(r"^[A-Za-z0-9_-]*$")


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def decode(text: str) -> bytes:
    """Strict decode; raises ValueError on anything but canonical unpadded base64url
    (the unused bits of the last character zero: one text per value, as the web app's
    decoder has it)."""
    if not isinstance(text, str) or not _RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
    if encode(data) != text:
        raise ValueError("not canonical base64url")
    return data
