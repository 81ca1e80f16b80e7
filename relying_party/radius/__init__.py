"""pushauth-radius: a RADIUS server that adds push approval with number matching to a VPN.

A relying party in its own right, on the RP SDK (relying_party.sdk) and its end-to-end
verification. The parts, from the wire inwards:

- udp: the asyncio UDP shell (bytes in, bytes out; nothing else);
- packets: decoding and checking an Access-Request (client, Message-Authenticator) and
  encoding replies, with pyrad; no I/O;
- core: the decisions (what a typed answer means, which outcome gives which reply,
  user mapping, the duplicate cache); plain functions and data, no I/O;
- engine: one request's steps (first factor, push, wait, TOTP) over the SDK, Redis
  (the State records, rate limits) and the user store;
- store, state, upstream, audit: the user store (the demo RP's database), the
  Redis records, the upstream RADIUS check, the audit log lines;
- config, enroll, cli: the TOML file, `pushauth-radius enroll USER`, the command (with
  `devices USER` and `remove USER DEVICE`, from relying_party.host.devices).

See docs/radius.md.
"""
