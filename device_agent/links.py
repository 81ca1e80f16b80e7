"""The links the agent is given on its command line: which command takes a link of
which scheme, a link read from an image of its QR code, and an enrollment link read
and checked.

Light on purpose (protocol/uri.py and the agent's errors only): a wrong link is
refused before the command imports what it runs with (`enroll`: asyncio, websockets,
the frame types and signing; `add`, `import`: the importers; an image: its decoder).
"""

from __future__ import annotations

from pathlib import Path

from protocol import uri
from protocol.errors import ProtocolError

from .errors import InsecureBroker, UsageError
from .options import IMAGE_FORMATS_SAID

# Which command takes a link of each scheme, and what such a link is: a link given to
# another command is refused with the right command's name (people type `add` for a
# sign-in QR code's link, as an authenticator app's one "add account" button takes both).
_LINKS = {
    "pushauth": ("a push sign-in enrollment link", "enroll"),
    "otpauth": ("a verification-code link", "add"),
    "otpauth-migration": ("an authenticator export", "import"),
}
_TAKES = {
    "enroll": ("pushauth",),
    "reactivate": ("pushauth",),
    "add": ("otpauth",),
    "import": ("otpauth", "otpauth-migration"),
}


def other_command(link: str, command: str) -> tuple[str, str] | None:
    """What `link` is and the command that takes it, if it is a link of ours that
    `command` does not take."""
    scheme = _scheme(link)
    if scheme in _LINKS and scheme not in _TAKES[command]:
        return _LINKS[scheme]
    return None


def check_link_command(link: str, command: str) -> None:
    """Refuse, naming the right command, a link that `command` does not take."""
    other = other_command(link, command)
    if other is not None:
        what, right = other
        scheme = _scheme(link)
        raise UsageError(f"this is {what} ({scheme}://...): use pushauth-agent {right} '{scheme}://...'")


def _scheme(link: str) -> str:
    return link.strip(" \t\n\r\f\v").partition(":")[0].lower()  # ASCII white space only


# A missing file with one of these names is reported as such, not as a bad link.
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})


def _is_file(argument: str) -> bool:
    try:
        return Path(argument).is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL: no file of ours
        return False


def link_argument(argument: str, command: str) -> str:
    """The link `command` was given: the argument itself, or, when it names an image
    file, the one QR code in it that `command` takes (a screenshot of the service's
    page). A link for another command is refused naming that command."""
    named_image = "://" not in argument and Path(argument).suffix.lower() in _IMAGE_SUFFIXES
    if _scheme(argument) in _LINKS or not (named_image or _is_file(argument)):
        check_link_command(argument, command)
        return argument  # a link, or not a file: the command's parser says what is wrong
    try:
        with open(argument, "rb") as fh:
            head = fh.read(16)
            from . import qr_images

            if not qr_images.is_image(head):
                raise UsageError(
                    f"{argument} is neither a link nor an image of a QR code ({IMAGE_FORMATS_SAID})"
                )
            data = head + fh.read(qr_images.MAX_IMAGE_BYTES)
    except OSError as exc:
        raise UsageError(f"cannot read {argument}: {exc.strerror}") from None
    try:
        codes = qr_images.decode(data)
    except qr_images.QrImageError as exc:
        raise qr_images.QrImageError(f"{argument}: {exc.message}") from None
    taken = [code for code in codes if _scheme(code) in _TAKES[command]]
    if len(taken) == 1:
        return taken[0]
    if taken:
        raise UsageError(
            f"{argument} holds {len(taken)} different QR codes: give an image of only the one to add"
        )
    other = next((o for code in codes if (o := other_command(code, command)) is not None), None)
    if other is not None:
        what, right = other
        raise UsageError(f"the QR code in {argument} is {what}: use pushauth-agent {right} {argument}")
    raise UsageError(f"the QR code in {argument} is not {_LINKS[_TAKES[command][0]][0]}")


def parse_uri(text: str) -> uri.EnrollmentURI:
    try:
        parsed = uri.parse(text)
    except ProtocolError as exc:
        raise UsageError(exc.message) from None
    insecure = uri.insecure_transport(parsed.broker)
    if insecure is not None:  # refused before the passphrase, the token, anything
        raise InsecureBroker(insecure)
    return parsed
