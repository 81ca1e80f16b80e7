"""The plain `accounts.json` of earlier agents, read once to move it into the vault.

Earlier agents kept push accounts with their keys in a plain JSON file (mode 0600).
The store migrates it on first use (store.py) and then deletes it; this module only
reads it, strictly, and never writes it.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path
from typing import Any

LEGACY_FILE = "accounts.json"
LEGACY_VERSION = 1
_ACCOUNT_KEYS = {"name", "rp", "rp_name", "user", "label", "broker", "cid", "device_name", "added"}


class LegacyStoreError(Exception):
    """The old file exists but is damaged; it is left as it is."""


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def read_legacy(path: Path) -> list[dict[str, Any]] | None:
    """The account entries of an old plain store, or None if there is none."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LegacyStoreError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("version") != LEGACY_VERSION:
            raise ValueError(f"not a version {LEGACY_VERSION} accounts file")
        if not isinstance(doc.get("accounts"), list):
            raise ValueError("no account list")
        for raw in doc["accounts"]:
            if not isinstance(raw, dict):
                raise ValueError("an account entry is not an object")
            missing = _ACCOUNT_KEYS - raw.keys()
            if missing:
                raise ValueError(f"an account entry lacks {sorted(missing)}")
            if raw.get("seed") and len(unb64(raw["seed"])) != 32:
                raise ValueError(f"account {raw['name']!r} has a key of the wrong size")
        return list(doc["accounts"])
    except (ValueError, TypeError, KeyError, binascii.Error) as exc:
        # Never "repair" by overwriting: the file holds keys the user cannot get back.
        raise LegacyStoreError(f"{path} is damaged ({exc}); it was left untouched") from None
