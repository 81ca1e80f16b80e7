"""The account page: who is signed in, how, and where to manage sign-in methods."""

from __future__ import annotations

from aiohttp import web

from . import auth
from .keys import DB
from .render import render
from .sessions import get_session

routes = web.RouteTableDef()


@routes.get("/account")
async def account(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    session = get_session(request)
    db = request.app[DB]
    devices = db.devices(user.id, confirmed_only=True)
    return render(
        request,
        "account.html",
        {
            "user": user,
            "devices": devices,
            "second_factor": auth.second_factor_required(db, user),
            "auth_at": session.get("auth_at"),
            "method": session.get("method", "Password"),
        },
    )
