"""Light commands stay light: what a command line imports before it runs a command.

Every run of `pushauth-agent` and `pushauth-broker` builds the whole parser; each
command imports what it needs when it runs (docs/performance.md, "Command start-up").
An import added at the top of cli.py, or of a module the parser needs, would bring
back a heavy module into every run: the modules below were each most of a run's CPU.
"""

from __future__ import annotations

import json
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

LIGHT_COMMANDS = {
    # The frame types and signing, the importers and TOTP, the backups and a broker's client.
    "device_agent.cli": (
        ["--home", "{home}", "accounts"],
        {"asyncio", "websockets", "protocol.frames", "nacl.signing", "pyotp", "device_agent.backup_actions"},
    ),
    # Redis, asyncio, the store and frame types, the server.
    "broker.cli": (
        ["rp", "list", "--help"],
        {"redis", "asyncio", "uvloop", "aiohttp", "protocol.frames", "broker.store", "broker.api"},
    ),
}


def test_light_commands_do_not_import_what_they_do_not_use(tmp_path: Path) -> None:
    for module, (words, heavy) in LIGHT_COMMANDS.items():
        out = tmp_path / f"{module}.json"
        argv = [w.format(home=tmp_path / "home") for w in words]
        run = subprocess.run(
            [sys.executable, "-c", PROBE, str(out), module, *argv],
            capture_output=True,
            text=True,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        imported = set(json.loads(out.read_text()))
        assert not heavy & imported, f"{module} {' '.join(words)} imported {sorted(heavy & imported)}"
