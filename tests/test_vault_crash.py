"""A crash in the middle of a vault write never loses the vault.

A real subprocess appends accounts and saves the vault in a tight loop, printing the
number of each account after its save returned; we SIGKILL it at random moments,
many times, and check after each kill that the vault opens with every account whose
save had returned (and at most the one being written when it died).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from device_agent.accounts_model import OtpAccount
from device_agent.vault import KdfParams, Vault

ROOT = Path(__file__).resolve().parent.parent
KILLS = 25

WRITER = """
import sys
from pathlib import Path
from device_agent.accounts_model import OtpAccount
from device_agent.vault import Vault

vault = Vault.open(Path(sys.argv[1]), "pass phrase")
n = len(vault.accounts)
while True:
    vault.accounts.append(OtpAccount(secret=n.to_bytes(4, "big") * 5, name=f"account {n}"))
    vault.records["last"] = n
    vault.records["padding"] = "x" * 200_000  # bigger writes: more time spent mid-write
    vault.save()
    print(n, flush=True)
    n += 1
"""


def _expected(n: int) -> OtpAccount:
    return OtpAccount(secret=n.to_bytes(4, "big") * 5, name=f"account {n}")


def test_sigkill_during_writes_never_loses_the_vault(tmp_path: Path) -> None:
    path = tmp_path / "vault.bin"
    Vault.create(path, "pass phrase", kdf=KdfParams.cheapest())
    rng = random.Random(4)
    saved = 0  # accounts whose save returned before the kill
    mid_write_kills = 0
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            for _ in range(rng.randint(1, 4)):
                line = proc.stdout.readline()
                assert line, proc.stderr.read() if proc.stderr else ""
                saved = int(line) + 1
            time.sleep(rng.uniform(0, 0.004))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            # Lines printed after our last read are saves that also completed.
            rest = proc.stdout.read().split()
            if rest:
                saved = int(rest[-1]) + 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        assert proc.returncode == -signal.SIGKILL

        vault = Vault.open(path, "pass phrase")
        count = len(vault.accounts)
        # Every completed save is there; at most one more (written, killed before printing).
        assert saved <= count <= saved + 1
        assert vault.accounts == [_expected(i) for i in range(count)]
        assert vault.records["last"] == count - 1
        if count == saved + 1:
            saved = count
        leftovers = [p.name for p in tmp_path.iterdir() if p.name not in (path.name, ".vault.bin.lock")]
        mid_write_kills += bool(leftovers)
        # A kill mid-write may leave atomic_write's temporary file, never a damaged vault.
        assert all(name.startswith(".vault.bin.") and name.endswith(".tmp") for name in leftovers)
        for name in leftovers:
            os.unlink(tmp_path / name)
    assert saved >= KILLS
    print(f"{KILLS} kills, {mid_write_kills} of them left a temporary file behind (killed mid-write)")
