"""What decides whether nodes of two releases can serve together (docs/operations.md,
"Upgrading and rolling back"): the RP API's version, the device protocol's, the store's
key layout. A running node says them in /healthz and `pushauth-broker --version`: after
an upgrade in place, its files on disk may be another release's than the one it runs."""

from __future__ import annotations

from importlib import metadata
from typing import Any

from protocol import SUBPROTOCOLS

from .keys import LAYOUT_VERSION

# The OpenAPI document's info.version (docs/http-api.md, "Versions of this API"): 1.1 the
# one-request (streamed) form of POST /v1/challenges; 1.2 its Idempotency-Key; 1.3
# DELETE /v1/enrollments/{id}; 1.4 DELETE /v1/users/{user} and GET /v1/users/{user}/data;
# 1.5 `versions` in /healthz; 1.6 `newer_than` in a recovery-key rotation's 409 conflict;
# 1.7 the RP's enrollment quota (429 from POST /v1/enrollments, two Policy fields);
# 1.8 `credential_ids` of POST /v1/challenges (a challenge aimed at a set of credentials);
# 1.9 challenges without number matching (`number_matching`, Policy `allow_numberless_push`);
# 1.10 devices per user (Policy `max_credentials`, 409 too_many_credentials); 1.11 an
# enrollment's `refused`: a device refused at that cap, and its long-polls answer then.
API_VERSION = "1.11"


def package_version() -> str:
    try:
        return metadata.version("pushauth")
    except metadata.PackageNotFoundError:  # run from a source tree without an install
        return "unknown"


def versions() -> dict[str, Any]:
    """As /healthz says them (the Health schema's `versions`)."""
    return {"api": API_VERSION, "protocol": list(SUBPROTOCOLS), "layout": int(LAYOUT_VERSION)}


def version_line() -> str:
    """`pushauth-broker --version`."""
    v = versions()
    return (
        f"pushauth-broker {package_version()} (RP API {v['api']}, device protocol "
        f"{', '.join(v['protocol'])}, key layout {v['layout']})"
    )
