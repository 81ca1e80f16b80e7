"""Settings of the demo relying party, filled by the CLI (or by tests)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from . import proxies


@dataclass(frozen=True)
class Settings:
    db_path: Path
    broker_url: str  # the broker's HTTP base URL, e.g. http://127.0.0.1:8700
    api_key: str
    app_name: str = "pushauth demo portal"
    # Where the phone app (the web authenticator) is served, e.g. the broker's /app/
    # (`pushauth-broker serve --webapp`) or its own origin (deploy/webapp.md); the setup
    # page links to it. None: the page names the app without a link.
    app_url: str | None = None
    # Cookies get the Secure flag (and the __Host- prefix) when the site is served
    # over https; plain http is only for a local demo, where browsers drop Secure
    # cookies on anything but localhost.
    secure_cookies: bool = False
    # The sign-in number's digits and the seconds a sign-in request stays answerable;
    # None: not sent, the RP's policy at the broker decides (pushauth-broker rp set).
    push_digits: int | None = None
    push_ttl: int | None = None
    # Seconds a setup's test notification stays answerable (at least a sign-in's, at most
    # the policy's max_ttl: push.setup_ttl): it goes to the new device only, and waits at
    # the broker until that device connects, so a person who enrolls first and then
    # starts `pushauth-agent listen` still has time.
    setup_push_ttl: int = 180
    session_idle: int = 30 * 60  # seconds
    session_max: int = 8 * 3600  # seconds, absolute lifetime of a signed-in session
    # Password and code attempts: after `lockout_after` consecutive failures an
    # account is locked for `lockout_base` seconds, doubling up to `lockout_max`.
    lockout_after: int = 5
    lockout_base: int = 60
    lockout_max: int = 15 * 60
    # Per client address, failures in a sliding window (stops spraying many names).
    ip_failures: int = 20
    ip_window: int = 10 * 60
    # Reverse proxies whose X-Forwarded-For is believed (addresses or CIDR networks);
    # empty: the TCP peer is the client (a header from anyone else is ignored).
    trusted_proxies: tuple[str, ...] = ()
    # A fresh second factor within this many seconds lets the user add or remove a
    # sign-in method or change the password; older, and they are asked again.
    reauth_window: int = 10 * 60
    # A device the user removed while the broker refused or could not be reached is asked
    # to be revoked again in the background (revocations.py): first after this many
    # seconds, then after twice as long each time, up to revocation_retry_max.
    revocation_retry: float = 30.0
    revocation_retry_max: float = 3600.0
    argon2_opslimit: int | None = None  # None: PyNaCl's "interactive" profile
    argon2_memlimit: int | None = None

    @cached_property
    def trusted_networks(self) -> tuple[proxies.Network, ...]:
        return proxies.parse_networks(self.trusted_proxies)

    @property
    def cookie_name(self) -> str:
        return "__Host-pushauth_rp" if self.secure_cookies else "pushauth_rp"
