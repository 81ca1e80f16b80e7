"""The application factory: settings in, a ready aiohttp application out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from ..sdk import PushAuthClient
from . import (
    csrf,
    middleware,
    reauth,
    render,
    revocations,
    sessions,
    views_account,
    views_activity,
    views_password,
    views_recovery,
    views_security,
    views_signin,
)
from .attempts import AttemptGate
from .config import Settings
from .db import Database
from .keys import ATTEMPTS, CLIENT, DB, IP_LIMITER, SETTINGS
from .ratelimit import AttemptLimiter

STATIC = Path(__file__).resolve().parent.parent / "static"
# Forms here are a few short fields: anything larger is refused before it is parsed.
MAX_BODY = 16 * 1024
PURGE_EVERY_S = 600


def create_app(settings: Settings) -> web.Application:
    db = Database(settings.db_path)
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[
            sessions.middleware(db, settings),
            middleware.error_middleware,
            csrf.csrf_middleware,
        ],
    )
    app[SETTINGS] = settings
    app[DB] = db
    app[IP_LIMITER] = AttemptLimiter(settings.ip_failures, settings.ip_window)
    app[ATTEMPTS] = AttemptGate()
    app[render.ENV_KEY] = render.environment()
    app[render.APP_NAME_KEY] = settings.app_name
    app.add_routes(views_signin.routes)
    app.add_routes(views_account.routes)
    app.add_routes(views_security.routes)
    app.add_routes(views_recovery.routes)
    app.add_routes(views_activity.routes)
    app.add_routes(views_password.routes)
    app.add_routes(reauth.routes)
    app.router.add_static("/static/", STATIC, append_version=True, name="static")
    app.on_response_prepare.append(middleware.security_headers)
    app.cleanup_ctx.append(_lifetime)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with PushAuthClient(settings.broker_url, settings.api_key) as client:
        app[CLIENT] = client
        tasks = [
            asyncio.create_task(_purge_sessions(app[DB])),
            # Devices the user removed while the broker did not confirm it: asked again.
            asyncio.create_task(revocations.run(client, app[DB], settings)),
        ]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    app[DB].close()


async def _purge_sessions(db: Database) -> None:
    """Expired sessions are refused when read; this only keeps the table small."""
    while True:
        db.sessions_purge()
        await asyncio.sleep(PURGE_EVERY_S)
