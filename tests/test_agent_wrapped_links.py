"""pushauth-agent (real subprocesses; `enroll` against a real broker) given a link that an
e-mail or a terminal wrapped across lines: read as the link (docs/protocol.md 11.1),
the line break and the spaces beside it not kept in the service's or account's name."""

from __future__ import annotations

import json
from pathlib import Path

from e2e_helpers import agent_env, agent_ok  # noqa: F401  (agent_env: autouse)
from shared_broker import broker, rp  # noqa: F401  (fixtures: one broker for the module, an RP a test)

from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp

LABEL = "alice.liddell@example.com"


def wrapped(link: str, *cuts: tuple[str, str]) -> str:
    """`link` broken after each `after` text with the white space `wrap` (a mail client's
    soft break, an indented next line)."""
    for after, wrap in cuts:
        at = link.index(after) + len(after)
        link = link[:at] + wrap + link[at:]
    return link


async def test_enroll_with_a_link_wrapped_across_lines(client: PushAuthClient, tmp_path: Path) -> None:
    home = tmp_path / "phone"
    started = await client.create_enrollment("alice", LABEL, totp=new_totp())
    assert started.uri is not None
    link = wrapped(started.uri, ("pushauth://enr", "\n"), ("rp_name=", "\r\n   "), ("alice.lid", " \r\n  "))
    assert "\n" in link and " " in link
    out = agent_ok(home, "enroll", "--name", "Phone", link)
    assert f'"{LABEL}"' in out, out
    (listed,) = json.loads(agent_ok(home, "accounts", "--json"))
    assert listed["name"] == LABEL and listed["status"] == "active", listed
    done = await client.wait_enrollment(started, timeout=10)
    assert done.credential is not None and done.credential.id == listed["credential_id"]


def test_add_with_a_verification_code_link_wrapped_across_lines(tmp_path: Path) -> None:
    home = tmp_path / "phone"
    link = "otpauth://totp/Example%20Corp:alice.liddell%40example.com?secret=JBSWY3DPEHPK3PXP&issuer=Example%20Corp"
    link = wrapped(
        link,
        ("totp/Exam", " \r\n "),
        ("alice.lid", " \n\t"),
        ("secret=JBSW", "\r\n"),
        ("issuer=Exam", "\r\n  "),
    )
    agent_ok(home, "add", link)
    (listed,) = json.loads(agent_ok(home, "accounts", "--json"))
    assert (listed["name"], listed["issuer"], listed["account"]) == (
        f"Example Corp: {LABEL}",
        "Example Corp",
        LABEL,
    )
