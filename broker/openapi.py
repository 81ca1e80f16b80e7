"""The OpenAPI 3.1 document of the RP API (served at /v1/openapi.json).

tests/test_broker_openapi.py checks it against the routes and validates real
responses against these schemas, so it cannot drift from what the server does.

broker/app.py imports this module when the app is made, not on the first request:
the document must describe the code the node runs. A deployment upgraded in place
(deploy/README.md: a git checkout with an editable install) has the next release's
files on disk while its nodes still run the last one until each is restarted; a
module first imported then would have served the new release's document, API version
and all (what the SDK reads to decide whether a create may be sent again), from a
node that does not do what it says. The costly part, the text pattern's scan of the
Unicode database, is still made on the first request (`document`).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web

from protocol.challenge import MAX_TARGETS, MAX_TTL_S, MIN_TTL_S
from protocol.numbers import MAX_DIGITS, MIN_DIGITS

from .api import MAX_WAIT_S
from .backups import MAX_BLOB
from .jsonio import json_response
from .openapi_rules import b64url, safe_text_pattern
from .policy import MAX_CREDENTIALS, MAX_ENROLLMENTS_PER_MINUTE, MAX_PENDING_ENROLLMENTS, MAX_PUSHES_LIMIT
from .versions import API_VERSION

# Exactly what the API accepts (issue 11, finding 8): every id, key, signature and
# text field has the pattern and lengths the handlers check (tests/test_openapi_fuzz.py).
_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_B64_32 = b64url(32)  # public keys, nonces, hashes
_B64_64 = b64url(64)  # signatures
_MS = {"type": "integer", "description": "Unix time in milliseconds"}


def _text(max_len: int, min_len: int = 1) -> dict[str, Any]:
    """Text shown to people: no control, format, line-separator or invisible characters
    (protocol/text.py, DESIGN invariant 12)."""
    return {"type": "string", "minLength": min_len, "maxLength": max_len, "pattern": _SAFE_TEXT}


# Stands for safe_text_pattern() in the template until `document` fills it in.
_SAFE_TEXT = "<safe text pattern>"


_USER = _text(128)
_DIGITS = {"type": "integer", "minimum": MIN_DIGITS, "maximum": MAX_DIGITS}
_TTL = {"type": "integer", "minimum": MIN_TTL_S, "maximum": MAX_TTL_S}
# A challenge's credential_id and credential_ids, as the broker reports them.
_TARGETED = {
    "oneOf": [_ID, {"type": "null"}],
    "description": "the credential it was aimed at, when it was aimed at one (by credential_id or "
    "credential_ids); else null",
}
_TARGET_SET = {"type": "array", "items": _ID, "minItems": 1, "maxItems": MAX_TARGETS, "uniqueItems": True}
_TARGETED_SET = {
    "oneOf": [_TARGET_SET, {"type": "null"}],
    "description": "the credentials it was aimed at (by credential_id or credential_ids), in the "
    "order the create named them; null: the user's confirmed ones (API 1.8)",
}
_CONTEXT = {
    "type": "object",
    "maxProperties": 16,
    "propertyNames": _text(32),
    "additionalProperties": _text(256, 0),
    "description": "Shown on the device, e.g. app, ip, location, browser: at most 16 entries, keys "
    "1..32 and values 0..256 characters, none of them control, format, line-separator or invisible "
    "characters (docs/protocol.md section 18.4).",
}


# API 1.9: false only for a challenge created with "number_matching": false.
_NUMBER_MATCHING = {
    "type": "boolean",
    "description": "false: created without number matching (no number shown; any signed approval approves)",
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": False,
    }


SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
            # 409 conflict of a recovery-key rotation: the ts the next one must be newer than
            "newer_than": {"type": "integer"},
            # 404 not_found of POST /v1/challenges: the targets that are not the user's
            "credential_ids": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["type", "title", "status", "detail", "code"],
    },
    "RelyingParty": _obj({"id": _ID, "name": {"type": "string"}}),
    "Credential": _obj(
        {
            "id": _ID,
            "user": _USER,
            "account": _text(256),
            "name": _text(64),
            "public_key": _B64_32,
            "created_at": _MS,
            "last_used_at": {"oneOf": [_MS, {"type": "null"}]},
            "recovered_from": {
                "oneOf": [_ID, {"type": "null"}],
                "description": "the credential whose recovery key registered this one (device restored)",
            },
            "binding": {
                "oneOf": [_B64_64, {"type": "null"}],
                "description": "the device's signature binding its key to the enrollment link (RP checks)",
            },
            "recovery_key": {
                "oneOf": [
                    _obj(
                        {
                            "public_key": _B64_32,
                            "ts": {"oneOf": [_MS, {"type": "null"}]},
                            "signature": {"oneOf": [_B64_64, {"type": "null"}]},
                        }
                    ),
                    {"type": "null"},
                ]
            },
            "recovery": {
                "oneOf": [
                    _obj(
                        {
                            "from": _ID,
                            "ts": _MS,
                            "recovery_signature": _B64_64,
                            "signature": _B64_64,
                            "recovery_public_key": {"oneOf": [_B64_32, {"type": "null"}]},
                        }
                    ),
                    {"type": "null"},
                ]
            },
            "confirmed": {
                "type": "boolean",
                "description": "false from enrollment until POST /v1/credentials/{id}/confirm: until then "
                "it gets only challenges with its credential_id (the setup test push)",
            },
        }
    ),
    "Enrollment": _obj(
        {
            "id": _ID,
            "user": _USER,
            "account": _text(256),
            "recoverable": {"type": "boolean"},
            "status": {"enum": ["pending", "completed", "expired"]},
            "expires_at": _MS,
            "credential": {"oneOf": [_ref("Credential"), {"type": "null"}]},
            "token": {"type": "string", "description": "single-use, 10 minutes; only at creation"},
            "broker_url": {"type": "string", "description": "device WebSocket URL; only at creation"},
            "uri": {"type": "string", "description": "pushauth://enroll URI without TOTP; only at creation"},
            # API 1.11: a device refused at the user's device cap (broker/credential_cap.py).
            "refused": {
                "oneOf": [_ref("EnrollmentRefusal"), {"type": "null"}],
                "description": "the latest refusal of a device that used this enrollment's link "
                "(the enrollment stays pending and its link keeps working); a long-poll on the "
                "enrollment answers when one is written; null when none",
            },
        },
        ["id", "user", "account", "recoverable", "status", "expires_at", "credential", "refused"],
    ),
    "EnrollmentRefusal": _obj(
        {
            "code": {
                "enum": ["too_many_credentials"],
                "description": "the error code the device was given: the user has max_credentials "
                "active credentials (remove one, then the same link works)",
            },
            "at": _MS,
            "max_credentials": {
                "type": "integer",
                "minimum": 1,
                "description": "the RP's policy's max_credentials when the device was refused",
            },
        }
    ),
    "NewEnrollment": _obj(
        {
            "user": _USER,
            "account": _text(256),
            "recoverable": {"type": "boolean", "default": False},
        },
        ["user", "account"],
    ),
    "NewChallenge": _obj(
        {
            "user": _USER,
            "context": _CONTEXT,
            "ttl": {
                **_TTL,
                "description": "seconds; default and maximum are the RP's policy (GET /v1/rp/policy: "
                "ttl, max_ttl; 400 naming the field above max_ttl)",
            },
            "digits": {
                **_DIGITS,
                "description": "default and minimum are the RP's policy (GET /v1/rp/policy: digits, "
                "min_digits; 400 naming the field below min_digits)",
            },
            "rp_nonce": {**_B64_32, "description": "the RP's own fresh 32 bytes (base64url); made if absent"},
            "supersede": {
                "type": "boolean",
                "default": True,
                "description": "end the user's other pending challenges at this RP (status superseded)",
            },
            "credential_id": {
                "oneOf": [_ID, {"type": "null"}],
                "description": "send only to this credential (confirmed or not): a new device's test push",
            },
            "credential_ids": {
                "oneOf": [_TARGET_SET, {"type": "null"}],
                "description": "send only to these credentials of the user (confirmed or not), each "
                "named once: e.g. all but a device whose removal is pending. 404 not_found naming the "
                "ones that are not active credentials of the user (member credential_ids); nothing "
                "is made. Not with credential_id (API 1.8)",
            },
            # API 1.9 (docs/http-api.md, "Push without number matching")
            "number_matching": {
                "type": "boolean",
                "default": True,
                "description": "false: no number (the Challenge's number is null), the device asks "
                "approve / deny / report only, and any signed approval approves. Only where the RP's "
                "policy has allow_numberless_push (400 naming the field otherwise; never under "
                "nist-800-63b-4)",
            },
        },
        ["user"],
    )
    # credential_id or credential_ids, not both (either may be null: not named)
    | {
        "not": {
            "required": ["credential_id", "credential_ids"],
            "properties": {"credential_id": {"type": "string"}, "credential_ids": {"type": "array"}},
        }
    },
    "Challenge": _obj(
        {
            "id": _ID,
            "user": _USER,
            "number": {
                "oneOf": [{"type": "string", "pattern": "^[1-9][0-9]{1,7}$"}, {"type": "null"}],
                "description": "the number to show: exactly digits digits; null when number_matching "
                "is false (nothing to show)",
            },
            "digits": _DIGITS,
            "nonce": _B64_32,
            "rp_nonce": _B64_32,
            "context": _CONTEXT,
            "created_at": _MS,
            "expires_at": _MS,
            "credential_id": _TARGETED,
            "credential_ids": _TARGETED_SET,
            "number_matching": _NUMBER_MATCHING,
            "devices": {"type": "integer", "minimum": 1},
            "superseded": {
                "type": "array",
                "items": _ID,
                "description": "the user's pending challenges this one ended",
            },
        }
    ),
    "Answer": _obj(
        {
            "credential_id": _ID,
            "decision": {"enum": ["approve", "deny", "fraud"]},
            # The answer frame's own constraints (docs/protocol.md section 5): what the
            # device signed, which an RP checks before it verifies the signature.
            "number": {
                "type": "string",
                "pattern": "^[0-9]{0,8}$",
                "description": "the typed number: empty for deny and fraud",
            },
            "ts": {**_MS, "minimum": 0, "maximum": 2**53},
            "ctx_hash": _B64_32,
            "signature": _B64_64,
        }
    ),
    "ChallengeResult": _obj(
        {
            "id": _ID,
            "user": _USER,
            "status": {
                "enum": [
                    *("pending", "approved", "denied", "number_mismatch", "reported", "expired"),
                    *("cancelled", "superseded", "withdrawn"),
                ],
                "description": "only approved, denied, number_mismatch and reported carry an answer",
            },
            "nonce": _B64_32,
            "rp_nonce": _B64_32,
            "context": _CONTEXT,
            "digits": _DIGITS,
            "created_at": _MS,
            "expires_at": _MS,
            "credential_id": _TARGETED,
            "credential_ids": _TARGETED_SET,
            "number_matching": _NUMBER_MATCHING,
            "answer": {"oneOf": [_ref("Answer"), {"type": "null"}]},
        }
    ),
    "PushBlock": _obj(
        {
            "user": _USER,
            "muted_until": {
                "oneOf": [_MS, {"type": "null"}],
                "description": "after a fraud report; -1: until the RP lifts it; null: not muted",
            },
            "pushes_since_sign_in": {"type": "integer", "minimum": 0},
            "blocked": {"type": "boolean"},
            "max_pushes_since_sign_in": {"type": "integer"},
            "consecutive_failures": {
                "type": "integer",
                "minimum": 0,
                "description": "challenges answered with a wrong number in a row, across challenges "
                "(a successful sign-in resets it; lifting resets it when it is at failure_limit)",
            },
            "failure_limit": {
                "oneOf": [{"type": "integer", "minimum": 1}, {"type": "null"}],
                "description": "the count that locks push (NIST SP 800-63B-4 profile: 100); null: none",
            },
        }
    ),
    "Policy": _obj(
        {
            "profile": {"enum": ["default", "nist-800-63b-4"]},
            "max_pushes": {"type": "integer", "minimum": 1, "maximum": MAX_PUSHES_LIMIT},
            "max_pushes_per_minute": {"type": "integer", "minimum": 1},
            "fraud_mute": {"type": "integer", "minimum": 0, "description": "seconds; 0: until lifted"},
            "digits": _DIGITS,
            "min_digits": _DIGITS,
            "ttl": _TTL,
            "max_ttl": _TTL,
            "failure_limit": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
            # API 1.7: the RP's enrollment quota (docs/http-api.md, "Enrollment quota")
            "max_pending_enrollments": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_PENDING_ENROLLMENTS,
                "description": "enrollments of this RP pending at once (429 too_many_enrollments beyond)",
            },
            "enrollments_per_minute": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_ENROLLMENTS_PER_MINUTE,
                "description": "enrollments this RP may make a minute, a burst of as many "
                "(429 rate_limited beyond)",
            },
            # API 1.10: devices per user (broker/credential_cap.py)
            "max_credentials": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_CREDENTIALS,
                "description": "active credentials (devices) one user may have at this RP "
                "(409 too_many_credentials beyond, with the limit as max_credentials)",
            },
            # API 1.9: may a challenge be created with number_matching false?
            "allow_numberless_push": {
                "type": "boolean",
                "description": "challenges without number matching allowed (off by default; never "
                "under nist-800-63b-4)",
            },
        }
    ),
    "CredentialList": _obj({"credentials": {"type": "array", "items": _ref("Credential")}}),
    "Health": _obj(
        {
            "status": {"const": "ok"},
            "node": {"type": "string"},
            "redis": {"const": "ok"},
            # what this node runs (broker/versions.py): after an upgrade in place, not
            # necessarily the files on its disk
            "versions": _obj(
                {
                    "api": {"type": "string"},
                    "protocol": {"type": "array", "items": {"type": "string"}},
                    "layout": {"type": "integer"},
                }
            ),
            # the node's event listener (broker/event_listener.py); 503 events_unavailable
            # when unsubscribed for longer than serve --events-grace
            "events": _obj(
                {
                    "subscribed": {"type": "boolean"},
                    "down_for_s": {"type": "number"},
                    "malformed_skipped": {"type": "integer"},
                    "resubscriptions": {"type": "integer"},
                    "catch_ups": {"type": "integer"},
                    "long_polls": {"type": "integer"},
                    # event messages received since start (all the node's user
                    # channels), and the channels listened on now (docs/scaling.md)
                    "events_received": {"type": "integer"},
                    "channels": {"type": "integer"},
                }
            ),
        }
    ),
}


def _json(name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(name)}}}


def _problems(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": "error", "content": {"application/problem+json": {"schema": _ref("Problem")}}}
        for s in statuses
    }


_WAIT = {
    "name": "wait",
    "in": "query",
    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S, "default": 0},
    "description": "long-poll: seconds to wait while the object is pending",
}


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
    "description": "a create sent again with the same key (a node that hung, a broken connection) gets "
    "the challenge the first one made, in the same 201 form, instead of a new one: nothing more pushed "
    "or superseded; until that challenge expires; per RP and user. 409 idempotency_key_reused when the "
    "key made a challenge for another request (context, digits, credential_id(s) or rp_nonce)",
}

_STREAM_WAIT = {
    "name": "wait",
    "in": "query",
    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S, "default": MAX_WAIT_S},
    "description": "streamed form: seconds to wait for the result line while the challenge is pending "
    "(its expiry bounds it too); checked, and not used, in the plain form",
}


def _path_param(name: str) -> dict[str, Any]:
    """{id}: an id the broker made; {user}: the RP's own name for its user."""
    return {"name": name, "in": "path", "required": True, "schema": _USER if name == "user" else _ID}


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "security": [{"apiKey": []}], "responses": responses, **extra}


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "summary": "Liveness, Redis reachability and the event channel",
            "security": [],
            "responses": {"200": _json("Health", "healthy"), **_problems(503)},
        }
    },
    "/v1/rp": {
        "get": _op("The calling relying party", {"200": _json("RelyingParty", "ok"), **_problems(401)})
    },
    "/v1/rp/policy": {
        "get": _op(
            "The calling relying party's push policy (set by the broker's operator: `rp set`)",
            {"200": _json("Policy", "ok"), **_problems(401)},
        )
    },
    "/v1/enrollments": {
        "post": _op(
            "Start adding an authenticator for a user. 429 (with Retry-After; nothing is made) over "
            "the RP's enrollment quota: too_many_enrollments when max_pending_enrollments are pending, "
            "rate_limited over enrollments_per_minute (GET /v1/rp/policy). 409 too_many_credentials "
            "(nothing is made) when the user has max_credentials devices already",
            {"201": _json("Enrollment", "created"), **_problems(400, 401, 409, 413, 429)},
            requestBody=_body("NewEnrollment"),
        )
    },
    "/v1/enrollments/{id}": {
        "get": _op(
            "Enrollment status (long-poll with wait)",
            {"200": _json("Enrollment", "ok"), **_problems(400, 401, 404)},
            parameters=[_path_param("id"), _WAIT],
        ),
        "delete": _op(
            "Withdraw a pending enrollment: a device that uses its link afterwards is refused, and "
            "it reads as expired. Idempotent (also 204 when it had ended before; a completed one "
            "keeps its credential)",
            {"204": {"description": "withdrawn (now or before)"}, **_problems(401, 404)},
            parameters=[_path_param("id")],
        ),
    },
    "/v1/challenges": {
        "post": _op(
            "Send a sign-in push to the user's devices. With `Accept: application/x-ndjson` the "
            "same request also brings the result (docs/http-api.md, 'One request')",
            {
                "201": {
                    "description": "created. As application/json: the Challenge. As "
                    "application/x-ndjson (when Accept lists it): a chunked stream of JSON lines, "
                    "each ending in LF: first the Challenge, sent at once; then, when the challenge "
                    "ends or `wait` passes, its ChallengeResult (the body of GET "
                    "/v1/challenges/{id}; status pending when the wait passed or the node shut "
                    "down: read it by long-poll). A stream that ends after the first line means the "
                    "same. Blank lines are reserved and to be skipped",
                    "content": {
                        "application/json": {"schema": _ref("Challenge")},
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    },
                },
                **_problems(400, 401, 409, 413, 429),
            },
            requestBody=_body("NewChallenge"),
            parameters=[_STREAM_WAIT, _IDEMPOTENCY_KEY],
        )
    },
    "/v1/challenges/{id}": {
        "get": _op(
            "Challenge result with the device's signed answer (long-poll with wait)",
            {"200": _json("ChallengeResult", "ok"), **_problems(400, 401, 404)},
            parameters=[_path_param("id"), _WAIT],
        ),
        "delete": _op(
            "Cancel a pending challenge (status cancelled; its devices drop the prompt at once). "
            "Answers with the challenge as it is now: cancelled, or the outcome it reached before",
            {"200": _json("ChallengeResult", "ok"), **_problems(401, 404)},
            parameters=[_path_param("id")],
        ),
    },
    "/v1/users/{user}": {
        "delete": _op(
            "Erase everything the broker holds about the user at this RP (right to erasure): "
            "pending enrollments are withdrawn, credentials revoked (online devices are told at "
            "once), pending challenges end withdrawn, then every key of the user goes: "
            "credentials (revoked ones too), challenges, enrollments, recovery notices, push "
            "fatigue state, Web Push subscriptions. Idempotent: 204 also when there was nothing",
            {"204": {"description": "erased (now or before)"}, **_problems(400, 401)},
            parameters=[_path_param("user")],
        )
    },
    "/v1/users/{user}/data": {
        "get": _op(
            "Everything the broker holds about the user at this RP (right of access): credentials "
            "(revoked ones too, while kept), enrollments, challenges with their context and answers, "
            "recovery notices, Web Push endpoints, the push fatigue state",
            {"200": _json("UserData", "ok"), **_problems(400, 401)},
            parameters=[_path_param("user")],
        )
    },
    "/v1/users/{user}/credentials": {
        "get": _op(
            "A user's active credentials",
            {"200": _json("CredentialList", "ok"), **_problems(400, 401)},
            parameters=[_path_param("user")],
        )
    },
    "/v1/users/{user}/push-block": {
        "get": _op(
            "The user's push fatigue state: pushes since the last successful sign-in, fraud mute",
            {"200": _json("PushBlock", "ok"), **_problems(400, 401)},
            parameters=[_path_param("user")],
        ),
        "delete": _op(
            "Lift a fraud mute and reset the count of pushes since the last sign-in and in the last minute",
            {"204": {"description": "lifted"}, **_problems(400, 401)},
            parameters=[_path_param("user")],
        ),
    },
    "/v1/credentials/{id}": {
        "delete": _op(
            "Revoke a credential; an online device is told at once",
            {"204": {"description": "revoked"}, **_problems(401, 404)},
            parameters=[_path_param("id")],
        )
    },
    "/v1/credentials/{id}/confirm": {
        "post": _op(
            "Confirm a newly enrolled credential after its test push: it gets ordinary sign-ins from now on",
            {"204": {"description": "confirmed (now or before)"}, **_problems(401, 404, 409)},
            parameters=[_path_param("id")],
        )
    },
}

_CREDENTIAL = SCHEMAS["Credential"]["properties"]
SCHEMAS["UserData"] = _obj(
    {
        "user": _USER,
        "credentials": {"type": "array", "items": _ref("Credential"), "description": "active"},
        "revoked_credentials": {
            "type": "array",
            "items": _ref("Credential"),
            "description": "revoked, kept 180 days after their revocation",
        },
        "enrollments": {"type": "array", "items": _ref("Enrollment")},
        "challenges": {"type": "array", "items": _ref("ChallengeResult")},
        "recovery_notices": {
            "type": "array",
            "items": _obj(
                {
                    "id": _ID,
                    "credential_id": _ID,
                    "new_credential_id": _ID,
                    "new_device_name": _CREDENTIAL["name"],
                    "account": _CREDENTIAL["account"],
                    "created_at": _MS,
                }
            ),
        },
        "push_subscriptions": {
            "type": "array",
            "items": _obj({"credential_id": _ID, "endpoint": {"type": "string"}}),
        },
        "push_block": _ref("PushBlock"),
    }
)

# Device requests (no API key): signed by a device-held key over their time, see
# broker/signed_requests.py, broker/backups.py and broker/recovery.py.
_SIGNED = {"security": [], "description": "signed by a device key; see docs/http-api.md"}
# The request's time, Unix ms: within 5 minutes of the broker's clock or 403 stale_request.
_TS = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "description": "Unix time in milliseconds"}
SCHEMAS["RecoveryKey"] = _obj({"recovery_pk": _B64_32, "ts": _TS, "sig": _B64_64})
SCHEMAS["Recovery"] = _obj(
    {
        "cid": _ID,
        "pk": _B64_32,
        "name": _text(64),
        "recovery_pk": _B64_32,
        "ts": _TS,
        "recovery_sig": _B64_64,
        "sig": _B64_64,
    }
)
SCHEMAS["RecoveredCredential"] = _obj(
    {"id": _ID, "rp": _ID, "rp_name": _text(256), "user": _USER, "account": _text(256)}
)
_BLOB = {
    "content": {
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary", "minLength": 1, "maxLength": MAX_BLOB}
        }
    }
}
# A backup id is the base64url public key that signs the blob's requests.
_BACKUP_ID = {"name": "id", "in": "path", "required": True, "schema": _B64_32}
_SIGNED_HEADERS = [
    {
        "name": "X-Pushauth-Time",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]{1,16}$", "description": "Unix time in milliseconds"},
    },
    {"name": "X-Pushauth-Signature", "in": "header", "required": True, "schema": _B64_64},
]
PATHS["/v1/backups/{id}"] = {
    "put": {
        "summary": "Store a device's encrypted backup (ciphertext only, at most 256 KiB)",
        **_SIGNED,
        "parameters": [_BACKUP_ID, *_SIGNED_HEADERS],
        "requestBody": {"required": True, **_BLOB},
        "responses": {"204": {"description": "stored"}, **_problems(400, 403, 409, 413)},
    },
    "get": {
        "summary": "Read a device's encrypted backup",
        **_SIGNED,
        "parameters": [_BACKUP_ID, *_SIGNED_HEADERS],
        "responses": {"200": {"description": "the blob", **_BLOB}, **_problems(400, 403, 404, 409)},
    },
    "delete": {
        "summary": "Delete a device's encrypted backup (signed with op 'delete' over an empty body)",
        **_SIGNED,
        "parameters": [_BACKUP_ID, *_SIGNED_HEADERS],
        "responses": {"204": {"description": "deleted"}, **_problems(400, 403, 404, 409)},
    },
}
PATHS["/v1/credentials/{id}/recovery-key"] = {
    "post": {
        "summary": (
            "Name a new recovery key for a recoverable credential, replacing the last one (signed by the"
            " credential key, with a ts newer than the last naming's: 409 conflict otherwise)"
        ),
        **_SIGNED,
        "parameters": [_path_param("id")],
        "requestBody": _body("RecoveryKey"),
        "responses": {"204": {"description": "set"}, **_problems(400, 403, 404, 409, 413)},
    }
}
PATHS["/v1/recoveries"] = {
    "post": {
        "summary": (
            "Register a new credential for a restored device with the old one's recovery key, once"
            " (409 recovery_key_used after that; 409 too_many_credentials, the key kept, when the user"
            " has max_credentials devices already)"
        ),
        **_SIGNED,
        "requestBody": _body("Recovery"),
        "responses": {"201": _json("RecoveredCredential", "created"), **_problems(400, 403, 404, 409, 413)},
    }
}

# Every operation reads or writes Redis: while it is unreachable (down, failing over)
# each one answers 503 `unavailable` with Retry-After, and nothing has changed.
for _operations in PATHS.values():
    for _operation in _operations.values():
        _operation["responses"].update(_problems(503))


# What every operation may answer besides its own outcomes: a malformed request head
# or a NUL in it (400), a head or body too slow (408) or too large (431), the store
# unreachable (503); with an API key, 401; with a JSON body, 400 (what the schema
# refuses: the detail names the field), 413 and 415; with an id or user in the path,
# 400 for a user name with control characters and 404; device requests are also
# rate-limited per address and per node (429 with Retry-After).
def _extra_statuses(path: str, operation: dict[str, Any]) -> list[int]:
    statuses = [400, 408, 431, 503]
    if operation.get("security") != []:
        statuses.append(401)
    if "requestBody" in operation:
        statuses += [413, 415]
    if "{" in path or path == "/v1/challenges":  # a credential_id(s) that is not the user's
        statuses.append(404)
    if operation.get("security") == [] and path != "/healthz":
        statuses += [403, 409, 429]
    return statuses


for _path, _operations in PATHS.items():
    for _operation in _operations.values():
        _documented = _operation["responses"]
        _documented.update(
            {k: v for k, v in _problems(*_extra_statuses(_path, _operation)).items() if k not in _documented}
        )

# operationIds, and links from the operations that make ids to those that take them
# (OpenAPI 3.1 "links"): how a client, or a fuzzer, reaches real objects.
_OPERATION_IDS = {
    ("/healthz", "get"): "health",
    ("/v1/rp", "get"): "getRp",
    ("/v1/rp/policy", "get"): "getRpPolicy",
    ("/v1/enrollments", "post"): "createEnrollment",
    ("/v1/enrollments/{id}", "get"): "getEnrollment",
    ("/v1/enrollments/{id}", "delete"): "cancelEnrollment",
    ("/v1/challenges", "post"): "createChallenge",
    ("/v1/challenges/{id}", "get"): "getChallenge",
    ("/v1/challenges/{id}", "delete"): "cancelChallenge",
    ("/v1/users/{user}", "delete"): "eraseUser",
    ("/v1/users/{user}/data", "get"): "exportUser",
    ("/v1/users/{user}/credentials", "get"): "listCredentials",
    ("/v1/users/{user}/push-block", "get"): "getPushBlock",
    ("/v1/users/{user}/push-block", "delete"): "liftPushBlock",
    ("/v1/credentials/{id}", "delete"): "revokeCredential",
    ("/v1/credentials/{id}/confirm", "post"): "confirmCredential",
    ("/v1/credentials/{id}/recovery-key", "post"): "setRecoveryKey",
    ("/v1/recoveries", "post"): "recoverCredential",
    ("/v1/backups/{id}", "put"): "putBackup",
    ("/v1/backups/{id}", "get"): "getBackup",
    ("/v1/backups/{id}", "delete"): "deleteBackup",
}
for (_path, _method), _operation_id in _OPERATION_IDS.items():
    PATHS[_path][_method]["operationId"] = _operation_id


def _links(path: str, method: str, status: str, links: dict[str, tuple[str, str, str]]) -> None:
    """links: name -> (operationId, its parameter, a runtime expression for its value)."""
    PATHS[path][method]["responses"][status]["links"] = {
        name: {"operationId": op, "parameters": {param: value}} for name, (op, param, value) in links.items()
    }


_links(
    "/v1/enrollments",
    "post",
    "201",
    {
        "GetEnrollment": ("getEnrollment", "id", "$response.body#/id"),
        "CancelEnrollment": ("cancelEnrollment", "id", "$response.body#/id"),
        "ListCredentials": ("listCredentials", "user", "$response.body#/user"),
    },
)
_links(
    "/v1/enrollments/{id}",
    "get",
    "200",
    {
        "ConfirmCredential": ("confirmCredential", "id", "$response.body#/credential/id"),
        "RevokeCredential": ("revokeCredential", "id", "$response.body#/credential/id"),
    },
)
_links(
    "/v1/challenges",
    "post",
    "201",
    {
        "GetChallenge": ("getChallenge", "id", "$response.body#/id"),
        "CancelChallenge": ("cancelChallenge", "id", "$response.body#/id"),
        "GetPushBlock": ("getPushBlock", "user", "$response.body#/user"),
        "LiftPushBlock": ("liftPushBlock", "user", "$response.body#/user"),
        "ListCredentials": ("listCredentials", "user", "$response.body#/user"),
    },
)
_links(
    "/v1/users/{user}/credentials",
    "get",
    "200",
    {
        "ConfirmCredential": ("confirmCredential", "id", "$response.body#/credentials/0/id"),
        "RevokeCredential": ("revokeCredential", "id", "$response.body#/credentials/0/id"),
        "SetRecoveryKey": ("setRecoveryKey", "id", "$response.body#/credentials/0/id"),
    },
)
_links(
    "/v1/recoveries",
    "post",
    "201",
    {"RevokeCredential": ("revokeCredential", "id", "$response.body#/id")},
)

_TEMPLATE: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "pushauth broker RP API",
        "version": API_VERSION,  # (broker/versions.py says what each one added)
        "description": "See docs/http-api.md. The device WebSocket (/v1/device) is in docs/protocol.md.",
    },
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
    },
    "paths": PATHS,
}


def _filled(value: Any, pattern: str) -> Any:
    if isinstance(value, dict):
        return {k: _filled(v, pattern) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, pattern) for v in value]
    return pattern if value == _SAFE_TEXT else value


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document, made on its first use (see the module's docstring)."""
    result: dict[str, Any] = _filled(_TEMPLATE, safe_text_pattern())
    return result


def __getattr__(name: str) -> Any:
    if name == "DOCUMENT":  # `from broker.openapi import DOCUMENT`: the whole document
        return document()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


async def openapi_handler(request: web.Request) -> web.Response:
    return json_response(document())
