"""Pages from Jinja templates (autoescaped), with what every page needs."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from . import csrf
from .sessions import get_session

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
APP_NAME_KEY = web.AppKey("app_name", str)


def _when(ms: int | None) -> str:
    if not ms:
        return "Never"
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.strftime("%d %b %Y, %H:%M UTC")


def _iso(ms: int | None) -> str:
    if not ms:
        return ""
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).isoformat(timespec="seconds")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,  # a typo in a template fails its test, not silently
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["iso"] = _iso
    return env


ENV_KEY = web.AppKey("jinja", jinja2.Environment)


def render(
    request: web.Request, template: str, context: dict[str, Any] | None = None, *, status: int = 200
) -> web.Response:
    session = get_session(request)
    page: dict[str, Any] = {
        "app_name": request.app[APP_NAME_KEY],
        "csrf_token": csrf.token(session),
        "signed_in": "uid" in session.data,
        "user_name": session.get("user_name"),
        "flashes": session.take_flashes(),
        "path": request.path,
        "static": lambda name: str(request.app.router["static"].url_for(filename=name)),
    }
    page.update(context or {})
    html = request.app[ENV_KEY].get_template(template).render(page)
    return web.Response(text=html, content_type="text/html", charset="utf-8", status=status)
