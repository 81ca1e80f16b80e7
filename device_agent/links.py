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
    scheme = scheme_of(link)
    if scheme in _LINKS and scheme not in _TAKES[command]:
        return _LINKS[scheme]
    return None


def takes(command: str, link: str) -> bool:
    """Whether `command` takes `link` (by its scheme)."""
    return scheme_of(link) in _TAKES[command]


def check_link_command(link: str, command: str) -> None:
    """Refuse, naming the right command, a link that `command` does not take."""
    other = other_command(link, command)
    if other is not None:
        what, right = other
        scheme = scheme_of(link)
        raise UsageError(f"this is {what} ({scheme}://...): use pushauth-agent {right} '{scheme}://...'")


def scheme_of(link: str) -> str:
    # ASCII white space only; a link wrapped across lines read as one (uri.unwrap)
    return uri.unwrap(link).strip(" \t\n\r\f\v").partition(":")[0].lower()


# A missing file with one of these names is reported as such, not as a bad link.
_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})


def _is_file(argument: str) -> bool:
    try:
        return Path(argument).is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL: no file of ours
        return False


def _names_a_file(argument: str) -> bool:
    """Whether `argument` is to be read as a file: not one of our links, and a file
    that exists or a name that only an image has (a missing one is reported as such)."""
    if scheme_of(argument) in _LINKS:
        return False
    return ("://" not in argument and Path(argument).suffix.lower() in _IMAGE_SUFFIXES) or _is_file(argument)


def _image_codes(path: str) -> list[str] | None:
    """The QR codes in the image file `path`, or None if it is a file but no image."""
    from . import qr_images

    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
            if not qr_images.is_image(head):
                return None
            data = head + fh.read(qr_images.MAX_IMAGE_BYTES)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return qr_images.decode(data)
    except qr_images.QrImageError as exc:
        raise qr_images.QrImageError(f"{path}: {exc.message}") from None


def link_argument(argument: str, command: str) -> str:
    """The link `command` was given: the argument itself, or, when it names an image
    file, the one QR code in it that `command` takes (a screenshot of the service's
    page). A link for another command is refused naming that command."""
    if not _names_a_file(argument):
        check_link_command(argument, command)
        return argument  # a link, or not a file: the command's parser says what is wrong
    codes = _image_codes(argument)
    if codes is None:
        raise UsageError(f"{argument} is neither a link nor an image of a QR code ({IMAGE_FORMATS_SAID})")
    taken = [code for code in codes if takes(command, code)]
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


def command_for(argument: str) -> str:
    """The command that adds what `argument` is, for one "add" that takes anything (the
    terminal screen's): a link by its scheme; an image by its QR codes (a setup code
    enrolls, one verification-code link is added, anything else is an import); any
    other file is an export to import."""
    scheme = scheme_of(argument)
    if scheme in _LINKS:
        return _LINKS[scheme][1]
    if not _names_a_file(argument):
        raise UsageError(
            "give a link (pushauth://enroll, otpauth:// or otpauth-migration://) or the path of "
            f"an image of its QR code ({IMAGE_FORMATS_SAID}) or of an export file"
        )
    codes = _image_codes(argument)
    if codes is None:
        return "import"
    schemes = [scheme_of(code) for code in codes]
    if "pushauth" in schemes:
        return "enroll"
    return "add" if schemes == ["otpauth"] else "import"


def parse_uri(text: str) -> uri.EnrollmentURI:
    try:
        parsed = uri.parse(text)
    except ProtocolError as exc:
        raise UsageError(exc.message) from None
    insecure = uri.insecure_transport(parsed.broker)
    if insecure is not None:  # refused before the passphrase, the token, anything
        raise InsecureBroker(insecure)
    return parsed
