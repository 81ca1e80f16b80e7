"""The web authenticator's static files (device_agent/webapp/) at /app/, for the demo.

Off unless `pushauth-broker serve --webapp`: an operator may host the files on any
origin instead (deploy/webapp.md). Whoever serves them can make the app sign, so the
route serves only the files that are there when the broker starts (read once into
memory: nothing written later is served), under a strict Content-Security-Policy that
names no other host: scripts, styles and the manifest from this origin only (scripts may
compile WebAssembly: the fast Argon2id of backups), network
connections to this origin and to encrypted WebSockets and HTTPS (each account's broker
comes from its enrollment link; a restored account recovers over HTTPS at its broker),
plus loopback ws:// and http:// for local brokers (the app refuses them for any other
host itself: docs/protocol.md section 2.1). Loopback by name and IPv4 only: a CSP host
source has no form for an IPv6 literal (browsers report `[::1]` as an invalid source on
every load and ignore it), so a local broker at ws://[::1] is reached as ws://localhost.
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

PREFIX = "/app"
ROOT = Path(__file__).resolve().parent.parent / "device_agent" / "webapp"
# The vendored third-party files scripts/build-webapp installs (npm), one a line with its
# hash: not in git, so a clone that never ran the script, or a wheel built without them,
# lacks them. Shipped beside the app (pyproject.toml's package-data) so the check below
# knows what a complete copy holds wherever it is installed.
VENDOR_LIST = ROOT.parent / "webapp_build" / "vendor.sha384"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
CSP = "; ".join(
    [
        "default-src 'none'",
        # 'wasm-unsafe-eval' lets the app compile WebAssembly (hash-wasm's Argon2id,
        # js/sealedfile.js), nothing more: no eval of JavaScript, and the module that
        # carries the WebAssembly comes from this origin like the rest of the code.
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "img-src 'self'",
        "manifest-src 'self'",
        "worker-src 'self'",
        "connect-src 'self' wss: https: ws://127.0.0.1:* ws://localhost:*"
        " http://127.0.0.1:* http://localhost:*",
        "media-src 'self' blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), publickey-credentials-get=(self), "
    "publickey-credentials-create=(self), "
    "geolocation=(), microphone=()",
    # Revalidated on every load (the ETag makes that cheap): a fixed app reaches phones
    # at once; the service worker keeps a copy for offline use.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def missing(root: Path = ROOT, vendor_list: Path = VENDOR_LIST) -> list[str]:
    """The files of a complete app that are not under `root` (paths relative to it):
    served without them the app loads and then fails on a phone (no QR scanning, no
    backups), or every path answers 404."""
    if not vendor_list.is_file():
        return ["index.html", f"vendor/ (the list {vendor_list.name} is missing too)"]
    wanted = ["index.html"]
    wanted += ["vendor/" + line.split()[1] for line in vendor_list.read_text().splitlines() if line.strip()]
    return [name for name in wanted if not (root / name).is_file()]


def incomplete(names: list[str], root: Path = ROOT) -> str:
    """What to tell an operator whose copy lacks `names`."""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return (
        f"the web authenticator's files in {root} are incomplete (missing {shown}): "
        "in a clone, run scripts/build-webapp (it needs npm); a wheel has them only when "
        "built after that (deploy/webapp.md)"
    )


def load(root: Path = ROOT) -> dict[str, StaticFile]:
    """Every servable file under `root`, by its path relative to it ("js/app.js")."""
    files: dict[str, StaticFile] = {}
    for path in sorted(root.rglob("*")):
        kind = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        if not path.is_file() or path.suffix not in TYPES or kind is None:
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        files[path.relative_to(root).as_posix()] = StaticFile(body, kind, etag)
    return files


def add_routes(app: web.Application, root: Path = ROOT) -> None:
    # Here, not at the top: `serve --webapp` checks the files with missing() before the
    # server is imported, and `python -m broker.webapp_static` serves nothing.
    from aiohttp import web

    files = load(root)

    async def redirect(_request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(PREFIX + "/")

    async def serve(request: web.Request) -> web.StreamResponse:
        name = request.match_info["path"] or "index.html"
        found = files.get(name)
        if found is None:
            raise web.HTTPNotFound(reason="no such file of the web authenticator")
        headers = {**HEADERS, "ETag": found.etag}
        if request.headers.get("If-None-Match") == found.etag:
            return web.Response(status=304, headers=headers)
        return web.Response(body=found.body, headers={**headers, "Content-Type": found.content_type})

    app.router.add_get(PREFIX, redirect)
    app.router.add_get(PREFIX + "/{path:.*}", serve)


def integrity(body: bytes) -> str:
    """The Subresource Integrity value of a file (sha384, as deploy/webapp.md pins it)."""
    return "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()


# Scripts that run outside the module graph, which an import map cannot pin: the service
# worker, the QR scanner's classic worker and the jsQR it loads (deploy/webapp.md).
CLASSIC_SCRIPTS = frozenset({"sw.js", "js/scan-worker.js", "vendor/jsQR.js"})


def modules(files: dict[str, StaticFile]) -> list[str]:
    """The app's JavaScript modules: its own (js/) and the vendored ones it imports."""
    return [name for name in files if name.endswith(".js") and name not in CLASSIC_SCRIPTS]


def import_map(files: dict[str, StaticFile]) -> str:
    """An import map pinning every JavaScript module by hash (`<script type="importmap">`
    before the app's script; browsers refuse a module whose bytes differ)."""
    pins = {f"./{name}": integrity(files[name].body) for name in modules(files)}
    return json.dumps({"integrity": pins}, indent=1)


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE


def main(argv: list[str] | None = None) -> None:
    """`python -m broker.webapp_static [--import-map]`: the sha384 of every file an operator
    serves (a checksum list to compare a deployed copy with), or the import map that pins
    the modules (deploy/webapp.md)."""
    args = sys.argv[1:] if argv is None else argv
    lacking = missing()
    if lacking:
        # A checksum list of an incomplete copy would be published as the release's.
        print(f"python -m broker.webapp_static: {incomplete(lacking)}", file=sys.stderr)
        sys.exit(2)
    files = load()
    try:
        if args == ["--import-map"]:
            print(import_map(files))
        else:
            for name, found in files.items():
                print(f"{integrity(found.body)}  {name}")
        sys.stdout.flush()  # here, where a reader that went away can be caught, not at exit
    except BrokenPipeError:
        # `... | head -1`: the reader has what it wanted. Stop quietly, as a Unix tool that
        # SIGPIPE ended, with its status (as pushauth-agent does); stdout to devnull so that
        # the flush at exit cannot fail again (the Python docs' note on SIGPIPE).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_BROKEN_PIPE)


if __name__ == "__main__":
    main()
