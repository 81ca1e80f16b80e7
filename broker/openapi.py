"""The OpenAPI 3.1 document of the RP API (served at /v1/openapi.json).

tests/test_broker_openapi.py checks it against the routes and validates real
responses against these schemas, so it cannot drift from what the server does.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .jsonio import json_response

_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
_B64 = {"type": "string", "pattern": "^[A-Za-z0-9_-]*$", "description": "base64url, no padding"}
_MS = {"type": "integer", "description": "Unix time in milliseconds"}
_USER = {"type": "string", "minLength": 1, "maxLength": 128}
_CONTEXT = {
    "type": "object",
    "maxProperties": 16,
    "additionalProperties": {"type": "string", "maxLength": 256},
    "description": "Shown on the device, e.g. app, ip, location, browser. Keys 1..32 characters.",
}


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
        },
        "required": ["type", "title", "status", "detail", "code"],
    },
    "RelyingParty": _obj({"id": _ID, "name": {"type": "string"}}),
    "Credential": _obj(
        {
            "id": _ID,
            "user": _USER,
            "account": {"type": "string"},
            "name": {"type": "string"},
            "public_key": _B64,
            "created_at": _MS,
            "last_used_at": {"oneOf": [_MS, {"type": "null"}]},
            "recovered_from": {
                "oneOf": [_ID, {"type": "null"}],
                "description": "the credential whose recovery key registered this one (device restored)",
            },
            "binding": {
                "oneOf": [_B64, {"type": "null"}],
                "description": "the device's signature binding its key to the enrollment link (RP checks)",
            },
            "recovery_key": {
                "oneOf": [
                    _obj(
                        {
                            "public_key": _B64,
                            "ts": {"oneOf": [_MS, {"type": "null"}]},
                            "signature": {"oneOf": [_B64, {"type": "null"}]},
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
                            "recovery_signature": _B64,
                            "signature": _B64,
                            "recovery_public_key": {"oneOf": [_B64, {"type": "null"}]},
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
            "account": {"type": "string"},
            "recoverable": {"type": "boolean"},
            "status": {"enum": ["pending", "completed", "expired"]},
            "expires_at": _MS,
            "credential": {"oneOf": [{"$ref": "#/components/schemas/Credential"}, {"type": "null"}]},
            "token": {"type": "string", "description": "single-use, 10 minutes; only at creation"},
            "broker_url": {"type": "string", "description": "device WebSocket URL; only at creation"},
            "uri": {"type": "string", "description": "pushauth://enroll URI without TOTP; only at creation"},
        },
        ["id", "user", "account", "recoverable", "status", "expires_at", "credential"],
    ),
    "NewEnrollment": _obj(
        {
            "user": _USER,
            "account": {"type": "string", "minLength": 1, "maxLength": 256},
            "recoverable": {"type": "boolean"},
        },
        ["user", "account"],
    ),
    "NewChallenge": _obj(
        {
            "user": _USER,
            "context": _CONTEXT,
            "ttl": {"type": "integer", "minimum": 10, "maximum": 600, "default": 60},
            "digits": {"type": "integer", "minimum": 2, "maximum": 8, "default": 2},
            "rp_nonce": {**_B64, "description": "the RP's own fresh 32 bytes (base64url); made if absent"},
            "supersede": {
                "type": "boolean",
                "default": True,
                "description": "end the user's other pending challenges at this RP (status superseded)",
            },
            "credential_id": {
                "oneOf": [_ID, {"type": "null"}],
                "description": "send only to this credential (confirmed or not): a new device's test push",
            },
        },
        ["user"],
    ),
    "Challenge": _obj(
        {
            "id": _ID,
            "user": _USER,
            "number": {"type": "string", "pattern": "^[1-9][0-9]{1,7}$"},
            "digits": {"type": "integer"},
            "nonce": _B64,
            "rp_nonce": _B64,
            "context": _CONTEXT,
            "created_at": _MS,
            "expires_at": _MS,
            "credential_id": {"oneOf": [_ID, {"type": "null"}], "description": "the targeted credential"},
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
            "number": {"type": "string"},
            "ts": _MS,
            "ctx_hash": _B64,
            "signature": _B64,
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
            "nonce": _B64,
            "rp_nonce": _B64,
            "context": _CONTEXT,
            "digits": {"type": "integer"},
            "created_at": _MS,
            "expires_at": _MS,
            "credential_id": {"oneOf": [_ID, {"type": "null"}], "description": "the targeted credential"},
            "answer": {"oneOf": [{"$ref": "#/components/schemas/Answer"}, {"type": "null"}]},
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
            "max_pushes": {"type": "integer", "minimum": 1, "maximum": 100},
            "max_pushes_per_minute": {"type": "integer", "minimum": 1},
            "fraud_mute": {"type": "integer", "minimum": 0, "description": "seconds; 0: until lifted"},
            "digits": {"type": "integer", "minimum": 2, "maximum": 8},
            "min_digits": {"type": "integer", "minimum": 2, "maximum": 8},
            "ttl": {"type": "integer", "minimum": 10, "maximum": 600},
            "max_ttl": {"type": "integer", "minimum": 10, "maximum": 600},
            "failure_limit": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
        }
    ),
    "CredentialList": _obj(
        {"credentials": {"type": "array", "items": {"$ref": "#/components/schemas/Credential"}}}
    ),
    "Health": _obj(
        {
            "status": {"const": "ok"},
            "node": {"type": "string"},
            "redis": {"const": "ok"},
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
                }
            ),
        }
    ),
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


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
    "schema": {"type": "number", "minimum": 0, "maximum": 60, "default": 0},
    "description": "long-poll: seconds to wait while the object is pending",
}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


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
            "Start adding an authenticator for a user",
            {"201": _json("Enrollment", "created"), **_problems(400, 401, 413)},
            requestBody=_body("NewEnrollment"),
        )
    },
    "/v1/enrollments/{id}": {
        "get": _op(
            "Enrollment status (long-poll with wait)",
            {"200": _json("Enrollment", "ok"), **_problems(400, 401, 404)},
            parameters=[_path_param("id"), _WAIT],
        )
    },
    "/v1/challenges": {
        "post": _op(
            "Send a sign-in push to the user's devices",
            {"201": _json("Challenge", "created"), **_problems(400, 401, 409, 413, 429)},
            requestBody=_body("NewChallenge"),
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
            "Lift a fraud mute and reset the count of pushes since the last sign-in",
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

# Device requests (no API key): signed by a device-held key over their time, see
# broker/signed_requests.py, broker/backups.py and broker/recovery.py.
_SIGNED = {"security": [], "description": "signed by a device key; see docs/http-api.md"}
SCHEMAS["RecoveryKey"] = _obj({"recovery_pk": _B64, "ts": _MS, "sig": _B64})
SCHEMAS["Recovery"] = _obj(
    {
        "cid": _ID,
        "pk": _B64,
        "name": {"type": "string", "minLength": 1, "maxLength": 64},
        "recovery_pk": _B64,
        "ts": _MS,
        "recovery_sig": _B64,
        "sig": _B64,
    }
)
SCHEMAS["RecoveredCredential"] = _obj(
    {"id": _ID, "rp": _ID, "rp_name": {"type": "string"}, "user": _USER, "account": {"type": "string"}}
)
_BLOB = {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
_SIGNED_HEADERS = [
    {"name": "X-Pushauth-Time", "in": "header", "required": True, "schema": {"type": "string"}},
    {"name": "X-Pushauth-Signature", "in": "header", "required": True, "schema": _B64},
]
PATHS["/v1/backups/{id}"] = {
    "put": {
        "summary": "Store a device's encrypted backup (ciphertext only, at most 256 KiB)",
        **_SIGNED,
        "parameters": [_path_param("id"), *_SIGNED_HEADERS],
        "requestBody": {"required": True, **_BLOB},
        "responses": {"204": {"description": "stored"}, **_problems(400, 403, 409, 413)},
    },
    "get": {
        "summary": "Read a device's encrypted backup",
        **_SIGNED,
        "parameters": [_path_param("id"), *_SIGNED_HEADERS],
        "responses": {"200": {"description": "the blob", **_BLOB}, **_problems(400, 403, 404, 409)},
    },
    "delete": {
        "summary": "Delete a device's encrypted backup (signed with op 'delete' over an empty body)",
        **_SIGNED,
        "parameters": [_path_param("id"), *_SIGNED_HEADERS],
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
            " (409 recovery_key_used after that)"
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

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "pushauth broker RP API",
        "version": "1",
        "description": "See docs/http-api.md. The device WebSocket (/v1/device) is in docs/protocol.md.",
    },
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
    },
    "paths": PATHS,
}


async def openapi_handler(request: web.Request) -> web.Response:
    return json_response(DOCUMENT)
