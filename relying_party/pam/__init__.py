"""pushauth-pam: push approval with number matching for SSH, sudo and every PAM service.

A relying party in its own right, on the RP SDK (relying_party.sdk) and its end-to-end
verification. The parts:

- core: the decisions (outcomes, messages, what a typed answer means); no I/O;
- config, mapping: the TOML file (with the root-only API key file) and the user
  mapping and bypass groups;
- flow: one sign-in's steps over the SDK, the user store and a PAM conversation;
- audit: one syslog line per decision;
- pam_module: the file libpam-python loads (pam_python.so), a thin shell over flow;
- cli: `pushauth-pam enroll USER`, `devices USER` and `remove USER DEVICE` (from
  relying_party.host.devices), `exec` (for pam_exec), `check-config`, `pam-line`.

See docs/pam.md.
"""
