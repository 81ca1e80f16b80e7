"""Light commands stay light: what a command line imports before it runs a command.

Every run of `pushauth-agent`, `pushauth-broker`, `pushauth-pam`, `pushauth-radius`
and `pushauth-rp` builds the whole parser; each command imports what it needs when it
runs (docs/performance.md, "Command start-up"). An import added at the top of cli.py,
or of a module the parser needs, would bring back a heavy module into every run: the
modules below were each most of a run's CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Runs a program's main() and writes, at exit, every module it had imported.
PROBE = """
import atexit, importlib, json, sys
out, module, *argv = sys.argv[1:]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.exit(importlib.import_module(module).main(argv))
"""

# The broker's server: aiohttp, the app, Web Push (cryptography), Redis, asyncio.
BROKER_SERVER = {"aiohttp", "redis", "asyncio", "uvloop", "cryptography", "broker.serve_cli", "broker.app"}

# (module, arguments, environment, exit status, modules it must not import)
LIGHT_COMMANDS: list[tuple[str, list[str], dict[str, str], int, set[str]]] = [
    # The frame types and signing, the importers and TOTP, the backups and a broker's client.
    (
        "device_agent.cli",
        ["--home", "{tmp}/home", "accounts"],
        {},
        0,
        {"asyncio", "websockets", "protocol.frames", "nacl.signing", "pyotp", "device_agent.backup_actions"},
    ),
    # An enrollment link that is not one: refused before what enrolls is imported.
    (
        "device_agent.cli",
        ["--home", "{tmp}/home", "enroll", "not-a-link"],
        {},
        2,
        {"asyncio", "websockets", "protocol.frames", "nacl.signing", "device_agent.actions"},
    ),
    # Redis, asyncio, the store and frame types, the server.
    (
        "broker.cli",
        ["rp", "list", "--help"],
        {},
        0,
        {"redis", "asyncio", "uvloop", "aiohttp", "protocol.frames", "broker.store", "broker.api"},
    ),
    # An `rp` command at work (its Redis not there here: exit 2 once the store is loaded):
    # the store and the refusals it raises, without the HTTP server or the metrics (the
    # device cap's refusal once brought both in through broker.problems: 0.55 s a run).
    (
        "broker.cli",
        ["rp", "list", "--redis-url", "redis://127.0.0.1:1/0"],
        {},
        2,
        {"aiohttp", "prometheus_client", "broker.problems", "broker.metrics", "broker.app"},
    ),
    # `serve --help`, and a `serve` refused for its arguments (a port, a Sentinel URL):
    # answered from broker/serve_options.py before the server is imported.
    ("broker.cli", ["serve", "--help"], {}, 0, BROKER_SERVER),
    ("broker.cli", ["serve", "--port", "99999999"], {}, 2, BROKER_SERVER),
    ("broker.cli", ["serve", "--redis-url", "redis+sentinel://h:x/m"], {}, 2, BROKER_SERVER),
    # An `rp` command refused for its arguments: before Redis is imported or reached.
    ("broker.cli", ["rp", "add", " "], {}, 2, {"redis", "asyncio", "broker.store", "broker.command"}),
    # A sign-in as pam_exec runs it on every login, of a member of a bypass group (root,
    # whose primary group is named in pam.toml): decided before any push, so without the
    # SDK's client (aiohttp), the frame types and signing, TOTP, the enrollment's QR codes.
    (
        "relying_party.pam.cli",
        ["--config", "{tmp}/pam.toml", "exec"],
        {"PAM_USER": "root", "PAM_SERVICE": "sshd"},
        0,
        {"aiohttp", "relying_party.sdk", "relying_party.models", "protocol.frames", "nacl", "pyotp", "segno"},
    ),
    # Redis (read by the configuration's check), the server, pyrad, the SDK, asyncio.
    (
        "relying_party.radius.cli",
        ["devices", "--help"],
        {},
        0,
        {"redis", "pyrad", "aiohttp", "asyncio", "relying_party.sdk", "protocol.frames", "segno"},
    ),
    # The SDK's data models and frame types, the password hashing, asyncio, the web app.
    (
        "relying_party.cli",
        ["user", "add", "--help"],
        {},
        0,
        {"relying_party.models", "protocol.frames", "nacl", "asyncio", "aiohttp", "relying_party.web.app"},
    ),
]


def _pam_config(tmp: Path) -> None:
    """pam.toml with root's group bypassing push, and its root-only API key file."""
    key = tmp / "api-key"
    key.write_text("k_test\n")
    key.chmod(0o600)
    (tmp / "pam.toml").write_text(
        f'[broker]\nurl = "http://127.0.0.1:1"\napi_key_file = "{key}"\n'
        f'[pam]\nstore = "{tmp / "users.db"}"\nsyslog = false\n'
        '[users]\ntemplate = "{user}@test.example"\nbypass_groups = ["root"]\n'
    )


def test_light_commands_do_not_import_what_they_do_not_use(tmp_path: Path) -> None:
    _pam_config(tmp_path)
    for i, (module, words, env, status, heavy) in enumerate(LIGHT_COMMANDS):
        out = tmp_path / f"{i}.json"
        argv = [w.format(tmp=tmp_path) for w in words]
        run = subprocess.run(
            [sys.executable, "-c", PROBE, str(out), module, *argv],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=False,
        )
        assert run.returncode == status, run.stderr
        imported = set(json.loads(out.read_text()))
        assert not heavy & imported, f"{module} {' '.join(words)} imported {sorted(heavy & imported)}"
