"""Time bounds the broker keeps and its command line states in `--help`.

In a module of their own, which imports nothing, so that building the command line's
parser (every `pushauth-broker` run, `--help` included) does not import the store and,
with it, Redis and the frame types.
"""

from __future__ import annotations

RP_CACHE_S = 2.0  # a removed RP's key stops working within this time
