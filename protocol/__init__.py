"""The pushauth wire protocol: frames, codec, signing bytes, URIs, numbers, states.

Nothing in this package does I/O. Broker, device agent and RP SDK are thin shells
around it, and a second implementation can be checked against it byte for byte.
"""

PROTOCOL_VERSION = 1
