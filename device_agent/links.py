"""The links the agent is given on its command line: which command takes a link of
which scheme, and an enrollment link read and checked.

Light on purpose (protocol/uri.py and the agent's errors only): a wrong link is
refused before the command imports what it runs with (`enroll`: asyncio, websockets,
the frame types and signing; `add`, `import`: the importers).
"""

from __future__ import annotations

from protocol import uri
from protocol.errors import ProtocolError

from .errors import InsecureBroker, UsageError

# Which command takes a link of each scheme, and what such a link is: a link given to
# another command is refused with the right command's name (people type `add` for a
# sign-in QR code's link, as an authenticator app's one "add account" button takes both).
_LINKS = {
    "pushauth": ("a push sign-in enrollment link", "enroll"),
    "otpauth": ("a verification-code link", "add"),
    "otpauth-migration": ("an authenticator export", "import"),
}
_TAKES = {"enroll": ("pushauth",), "add": ("otpauth",), "import": ("otpauth", "otpauth-migration")}


def check_link_command(link: str, command: str) -> None:
    """Refuse, naming the right command, a link that `command` does not take."""
    scheme = link.strip(" \t\n\r\f\v").partition(":")[0].lower()  # ASCII white space only
    if scheme in _LINKS and scheme not in _TAKES[command]:
        what, right = _LINKS[scheme]
        raise UsageError(f"this is {what} ({scheme}://...): use pushauth-agent {right} '{scheme}://...'")


def parse_uri(text: str) -> uri.EnrollmentURI:
    try:
        parsed = uri.parse(text)
    except ProtocolError as exc:
        raise UsageError(exc.message) from None
    insecure = uri.insecure_transport(parsed.broker)
    if insecure is not None:  # refused before the passphrase, the token, anything
        raise InsecureBroker(insecure)
    return parsed
