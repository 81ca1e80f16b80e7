"""The RADIUS attributes pushauth-radius reads and writes, as a pyrad dictionary.

Shipped as text here rather than read from FreeRADIUS's dictionaries, so the server
needs no FreeRADIUS files; the codes are RFC 2865, 2869 and 3579's.
"""

from __future__ import annotations

import io
from functools import cache

from pyrad.dictionary import Dictionary

TEXT = """\
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string encrypt=1
ATTRIBUTE NAS-IP-Address 4 ipaddr
ATTRIBUTE NAS-Port 5 integer
ATTRIBUTE Service-Type 6 integer
ATTRIBUTE Reply-Message 18 string
ATTRIBUTE State 24 octets
ATTRIBUTE Class 25 octets
ATTRIBUTE Session-Timeout 27 integer
ATTRIBUTE Idle-Timeout 28 integer
ATTRIBUTE Termination-Action 29 integer
ATTRIBUTE Called-Station-Id 30 string
ATTRIBUTE Calling-Station-Id 31 string
ATTRIBUTE NAS-Identifier 32 string
ATTRIBUTE Proxy-State 33 octets
ATTRIBUTE NAS-Port-Type 61 integer
ATTRIBUTE Connect-Info 77 string
ATTRIBUTE Message-Authenticator 80 octets
ATTRIBUTE NAS-Port-Id 87 string
ATTRIBUTE Framed-IP-Address 8 ipaddr
"""


@cache
def load() -> Dictionary:
    """The dictionary (parsed once; pyrad only reads it)."""
    return Dictionary(io.StringIO(TEXT))
