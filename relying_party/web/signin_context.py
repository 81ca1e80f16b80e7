"""What the device shows about a sign-in: application, address, place, browser.

The place is only what the RP can honestly know without a geolocation database:
the kind of network the request came from.
The address is the TCP peer's, or behind trusted proxies the one they forwarded
(proxies.py).
"""

from __future__ import annotations

import ipaddress
import re

from aiohttp import web

from .keys import SETTINGS
from .proxies import forwarded_client

_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("HeadlessChrome/", "Chrome (headless)"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Safari/", "Safari"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def client_ip(request: web.Request) -> str:
    trusted = request.app[SETTINGS].trusted_networks
    if not trusted:
        return request.remote or "unknown"
    return forwarded_client(request.remote, request.headers.getall("X-Forwarded-For", []), trusted)


def place(ip: str) -> str:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "Unknown location"
    if addr.is_loopback:
        return "This computer"
    if addr.is_private or addr.is_link_local:
        return "Local network"
    return "Internet"


def browser(user_agent: str) -> str:
    name = next((label for marker, label in _BROWSERS if marker in user_agent), "Unknown browser")
    system = next((label for marker, label in _SYSTEMS if marker in user_agent), None)
    return f"{name} on {system}" if system else name


def build(request: web.Request, app_name: str) -> dict[str, str]:
    ip = client_ip(request)
    ua = re.sub(r"[\x00-\x1f\x7f]", "", request.headers.get("User-Agent", ""))[:512]
    return {"app": app_name[:256], "ip": ip[:256], "location": place(ip), "browser": browser(ua)}
