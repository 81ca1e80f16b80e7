"""Ed25519 inputs on which verifiers disagree, and the rule that makes them agree.

RFC 8032 leaves a verifier some freedom (reduce S or not, cofactored or cofactorless
equation, accept small-order or non-canonical points); libraries differ, and an RP in
another language must reach the same verdict as this reference. docs/protocol.md
section 9 states the rule (libsodium's crypto_sign_verify_detached, which the
reference uses through PyNaCl; signing.refusal is its checks before the equation), and
`edge_vectors` builds the inputs that tell a verifier that follows it from one that
does not: signatures that a lax verifier accepts.

The point arithmetic here (RFC 8032 section 5.1, extended coordinates) is for building
those inputs and checking them; it is slow, never constant-time, and signs nothing real.
"""

from __future__ import annotations

import hashlib
from typing import Any

from . import signing
from .signing import ED25519_L as L
from .signing import ED25519_P as P

D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T)


def _add(a: Point, b: Point) -> Point:
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa = (y1 - x1) * (y2 - x2) % P
    bb = (y1 + x1) * (y2 + x2) % P
    cc = 2 * t1 * t2 * D % P
    dd = 2 * z1 * z2 % P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _mul(k: int, pt: Point) -> Point:
    out: Point = (0, 1, 1, 0)
    while k:
        if k & 1:
            out = _add(out, pt)
        pt = _add(pt, pt)
        k >>= 1
    return out


def _neg(pt: Point) -> Point:
    x, y, z, t = pt
    return (-x % P, y, z, -t % P)


def _x_of(y: int) -> int | None:
    """The even x with this y, or None if no point has this y."""
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    return P - x if x & 1 else x


def decode(data: bytes) -> Point | None:
    """A lax decoding, as many libraries have it: y is reduced mod p, and x = 0 with the
    sign bit set is taken as x = 0. None if no point has this y."""
    n = int.from_bytes(data, "little")
    y, sign = (n & ((1 << 255) - 1)) % P, n >> 255
    x = _x_of(y)
    if x is None:
        return None
    if x and (x & 1) != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def encode(pt: Point) -> bytes:
    x, y, z, _ = pt
    zi = pow(z, P - 2, P)
    x, y = x * zi % P, y * zi % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


B = decode((4 * pow(5, P - 2, P) % P).to_bytes(32, "little"))
assert B is not None
IDENTITY: Point = (0, 1, 1, 0)


def _same(a: Point, b: Point) -> bool:
    return encode(a) == encode(b)


def _enc(y: int, sign: int = 0) -> bytes:
    return (y | (sign << 255)).to_bytes(32, "little")


def small_order_encodings() -> list[tuple[str, bytes, bool]]:
    """The 32-byte encodings of the 8 points of order 1, 2, 4 and 8: (what, bytes,
    canonical). 8 canonical ones, and 6 more that a lax decoder reads as one of them
    (y + p for y = 0 and 1, or x = 0 with the sign bit set)."""
    t8 = _torsion_generator()
    points = sorted({encode(_mul(k, t8)) for k in range(8)}, key=lambda e: (_order(e), e))
    out = [(f"order {_order(e)}, canonical ({e.hex()[:8]}..{e.hex()[-2:]})", e, True) for e in points]
    out += [
        ("order 1, non-canonical: y = 1 with the sign bit (x = 0)", _enc(1, 1), False),
        ("order 2, non-canonical: y = p - 1 with the sign bit (x = 0)", _enc(P - 1, 1), False),
        ("order 1, non-canonical: y = p + 1", _enc(P + 1), False),
        ("order 1, non-canonical: y = p + 1 with the sign bit", _enc(P + 1, 1), False),
        ("order 4, non-canonical: y = p (= 0)", _enc(P, 0), False),
        ("order 4, non-canonical: y = p (= 0) with the sign bit", _enc(P, 1), False),
    ]
    return out


def _order(data: bytes) -> int:
    pt = decode(data)
    assert pt is not None
    for n in (1, 2, 4, 8):
        if _same(_mul(n, pt), IDENTITY):
            return n
    raise ValueError("not of small order")


def _torsion_generator() -> Point:
    """A point of order 8: [L] times a curve point kills its prime-order part and leaves
    its torsion; the first y = 2, 3, ... whose torsion has order 8."""
    for y in range(2, 100):
        x = _x_of(y)
        if x is None:
            continue
        t = _mul(L, (x, y, 1, x * y % P))
        if not _same(_mul(4, t), IDENTITY):
            return t
    raise AssertionError("no point of order 8 found")


def is_small_order(data: bytes) -> bool:
    pt = decode(data)
    return pt is not None and _same(_mul(8, pt), IDENTITY)


# -- what a lax verifier does, and inputs it accepts --------------------------------------


def _k(r: bytes, a: bytes, message: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + a + message).digest(), "little") % L


def lax_verify(public_key: bytes, message: bytes, signature: bytes, *, cofactored: bool = False) -> bool:
    """A verifier with none of the rule's checks: points decoded laxly, S used as it is,
    R compared as a point; `cofactored` checks [8][S]B = [8]R + [8][k]A instead."""
    a, r = decode(public_key), decode(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    lhs = _mul(s, B)
    rhs = _add(r, _mul(_k(signature[:32], public_key, message), a))
    if cofactored:
        lhs, rhs = _mul(8, lhs), _mul(8, rhs)
    return _same(lhs, rhs)


def _scalar(seed: bytes) -> int:
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return int.from_bytes(h, "little")


def forge_small_order(public_key: bytes, message: bytes) -> bytes:
    """A signature that a lax verifier accepts for a small-order key, made without any
    private key: R = [S]B - T for a T that [k]A then equals (about 1 try in 8)."""
    a = decode(public_key)
    assert a is not None
    torsion = [_mul(i, a) for i in range(8)]
    for n in range(1, 1000):
        s = int.from_bytes(hashlib.sha512(b"forge %d" % n).digest(), "little") % L
        for t in torsion:
            r = encode(_add(_mul(s, B), _neg(t)))
            if _same(_mul(_k(r, public_key, message), a), t):
                return r + s.to_bytes(32, "little")
    raise AssertionError("no forgery found")


def _sign_with(a: int, public_key: bytes, message: bytes, r_bytes: bytes | None, nonce: int) -> bytes:
    """(R, S) with S = r + k a: R = [r]B, or the given R bytes (then r = 0)."""
    r = 0 if r_bytes is not None else nonce % L
    rb = r_bytes if r_bytes is not None else encode(_mul(r, B))
    s = (r + _k(rb, public_key, message) * a) % L
    return rb + s.to_bytes(32, "little")


def edge_vectors(seed: bytes, message: bytes, valid_signature: bytes) -> list[dict[str, Any]]:
    """Keys and signatures over `message` that verifiers must treat alike. `seed` is a
    key that signed `message` as `valid_signature` (a deterministic Ed25519 signature)."""
    public_key = signing.public_key(seed)
    a = _scalar(seed)
    cases: list[tuple[str, bytes, bytes]] = [("the ordinary signature: valid", public_key, valid_signature)]
    s = int.from_bytes(valid_signature[32:], "little")
    cases.append(
        (
            "S + L (the same signature to a verifier that reduces S): non-canonical S",
            public_key,
            valid_signature[:32] + (s + L).to_bytes(32, "little"),
        )
    )
    for what, enc, _canonical in small_order_encodings():
        cases.append(
            (f"public key of {what}, a signature made without a key", enc, forge_small_order(enc, message))
        )
    # A key whose y is written + p (not of small order): nobody can sign for it, but a
    # verifier must refuse it for its encoding, before any equation.
    y = next(y for y in range(2, 19) if _x_of(y) is not None and not is_small_order(_enc(y)))
    cases.append(
        (f"public key y = p + {y}, non-canonical (not of small order)", _enc(P + y), valid_signature)
    )
    identity_r = [("canonical", _enc(1)), ("y = p + 1", _enc(P + 1)), ("y = 1 with the sign bit", _enc(1, 1))]
    for what, rb in identity_r:
        cases.append(
            (
                f"R the identity ({what}), S = k a: small-order R",
                public_key,
                _sign_with(a, public_key, message, rb, 0),
            )
        )
    # A key of mixed order (the real key plus a point of order 8): the cofactored
    # equation holds, the cofactorless one only when k is a multiple of 8.
    mixed = encode(_add(decode(public_key) or IDENTITY, _torsion_generator()))
    found: dict[bool, bytes] = {}
    for n in range(1, 200):
        sig = _sign_with(
            a, mixed, message, None, int.from_bytes(hashlib.sha512(b"mixed %d" % n).digest(), "little")
        )
        found.setdefault(_k(sig[:32], mixed, message) % 8 == 0, sig)
        if len(found) == 2:
            break
    cases.append(
        (
            "a key of mixed order, k not a multiple of 8: only the cofactored equation holds",
            mixed,
            found[False],
        )
    )
    cases.append(
        ("a key of mixed order, k a multiple of 8: the cofactorless equation holds", mixed, found[True])
    )
    out = []
    for name, pk, sig in cases:
        why = signing.refusal(pk, sig)
        if why is None and not lax_verify(pk, message, sig):
            why = "equation"
        out.append(
            {
                "name": name,
                "public_key": pk.hex(),
                "message": message.hex(),
                "signature": sig.hex(),
                "valid": why is None,
                "rejected_for": why,
                "lax_accepts": lax_verify(pk, message, sig),
                "cofactored_accepts": lax_verify(pk, message, sig, cofactored=True),
            }
        )
    return out
