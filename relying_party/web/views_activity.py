"""Sign-in activity (as Microsoft's My Sign-ins): recent sign-ins and attempts."""

from __future__ import annotations

from aiohttp import web

from . import activity, auth, push
from .keys import DB
from .render import render

routes = web.RouteTableDef()


@routes.get("/security/activity")
async def activity_page(request: web.Request) -> web.StreamResponse:
    user = auth.require_user(request)
    # Attempts whose page was closed (an attacker's, say) get their verified result first.
    await push.settle_pending(request, user)
    rows = activity.rows(request.app[DB], user)
    return render(
        request,
        "activity.html",
        {
            "rows": rows,
            "result_view": activity.view,
            "method_label": activity.method_label,
            "detail_label": activity.detail_label,
        },
    )
