"""Typed keys for what the application object holds (aiohttp AppKey)."""

from __future__ import annotations

from aiohttp import web

from ..sdk import PushAuthClient
from .attempts import AttemptGate
from .config import Settings
from .db import Database
from .ratelimit import AttemptLimiter

SETTINGS = web.AppKey("settings", Settings)
DB = web.AppKey("db", Database)
CLIENT = web.AppKey("client", PushAuthClient)
IP_LIMITER = web.AppKey("ip_limiter", AttemptLimiter)
ATTEMPTS = web.AppKey("attempts", AttemptGate)  # one password or code check at a time per account and address
