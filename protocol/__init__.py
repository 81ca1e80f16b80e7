"""The pushauth wire protocol: frames, codec, signing bytes, URIs, numbers, states.

Nothing in this package does I/O. Broker, device agent and RP SDK are thin shells
around it, and a second implementation can be checked against it byte for byte.
"""

# The device protocol's version. A device offers the versions it speaks as WebSocket
# subprotocols ("pushauth.v2", ...); the broker picks one and every frame carries it
# in `v` (docs/protocol.md, "Versions"). Version 2 added the RP's freshness value to
# challenges and answers, and enrollment binding and recovery keys to `enroll`.
PROTOCOL_VERSION = 2
SUPPORTED_VERSIONS: tuple[int, ...] = (2,)
SUBPROTOCOL_PREFIX = "pushauth.v"


def subprotocol(version: int) -> str:
    return f"{SUBPROTOCOL_PREFIX}{version}"


# What a client of this implementation offers, best first.
SUBPROTOCOLS: tuple[str, ...] = tuple(subprotocol(v) for v in sorted(SUPPORTED_VERSIONS, reverse=True))


def pick_version(
    offered: list[str] | tuple[str, ...], supported: tuple[int, ...] = SUPPORTED_VERSIONS
) -> int | None:
    """The highest version both sides speak, from the subprotocols a device offered."""
    versions = set()
    for name in offered:
        name = name.strip()
        digits = name[len(SUBPROTOCOL_PREFIX) :]
        if name.startswith(SUBPROTOCOL_PREFIX) and digits.isascii() and digits.isdigit() and len(digits) <= 4:
            versions.add(int(digits))
    common = versions & set(supported)
    return max(common) if common else None
