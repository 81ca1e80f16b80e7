"""QR codes read from images: `enroll`, `reactivate`, `add` and `import` given a
screenshot or photo instead of a link.

The images are made with segno (an encoder independent of the agent's decoder) and
Pillow, turned, inverted, compressed and laid on transparency as screenshots and
photos are; every command runs as the real `pushauth-agent` in a subprocess, and
`enroll` registers with a real broker.
"""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import segno
from e2e_helpers import agent_env  # noqa: F401  (autouse: the vault passphrase for every agent run)
from PIL import Image, ImageOps
from shared_broker import broker, rp  # noqa: F401  (fixtures: one broker for the module, an RP per test)
from support import AGENT, assert_cli_error, run_cli
from test_agent_e2e import RP, rp_api  # noqa: F401  (fixture: the RP's HTTP API)

from device_agent import otp_actions, qr_images
from device_agent.store import AccountStore
from protocol import signing

TOTP = "otpauth://totp/ACME:alice@acme.example?secret=JBSWY3DPEHPK3PXP&issuer=ACME"


def agent(home: Path, *args: str) -> Any:
    return run_cli([AGENT, "--home", str(home), *args], timeout=60)


def ok(home: Path, *args: str) -> str:
    result = agent(home, *args)
    assert result.returncode == 0, f"{args}: {result.stderr}{result.stdout}"
    return result.stdout


def code_image(text: str, *, scale: int = 6) -> Image.Image:
    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="png", scale=scale, border=4)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def canvas(*placed: tuple[Image.Image, tuple[int, int]], size: tuple[int, int] = (1000, 700)) -> Image.Image:
    """A 'screen' with codes at the given places, and some noise that is no code."""
    page = Image.new("RGB", size, (236, 240, 244))
    page.paste(Image.new("RGB", (300, 40), (30, 60, 200)), (20, size[1] - 60))
    for image, at in placed:
        page.paste(image, at)
    return page


def save(image: Image.Image, path: Path, **options: Any) -> Path:
    image.save(path, **options)
    return path


def otps(home: Path) -> list[tuple[str, bytes]]:
    return [(e.name, e.otp.secret) for e in AccountStore(home).entries() if e.otp is not None]


def png_claiming(width: int, height: int) -> bytes:
    """A PNG file whose header claims width x height pixels (and holds none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


# -- the decoder ----------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("fmt", "options"), [("PNG", {}), ("JPEG", {"quality": 60}), ("GIF", {}), ("WEBP", {"quality": 70})]
)
def test_every_format_a_screenshot_comes_in_reads_in_reading_order(fmt: str, options: dict[str, Any]) -> None:
    first, second, third = (f"otpauth://totp/S{i}:u?secret=JBSWY3DPEHPK3PXP{'A' * i}" for i in range(3))
    # Side by side but not level (the right one higher, as in a photo), and a third
    # below, turned a quarter: rows top to bottom, each left to right.
    page = canvas(
        (code_image(second), (560, 20)),
        (code_image(first), (30, 60)),
        (code_image(third).rotate(90, expand=True), (420, 380)),
    )
    data = encoded(page, fmt, **options)
    assert qr_images.is_image(data)
    assert qr_images.decode(data) == [first, second, third]


def test_light_on_dark_and_transparent_backgrounds_read_and_a_repeated_code_counts_once() -> None:
    dark = ImageOps.invert(code_image(TOTP))  # a dark-mode screen
    assert qr_images.decode(encoded(dark, "PNG")) == [TOTP]
    # Black modules on a transparent background (an SVG exported to PNG): flattened on
    # black, as a naive conversion does, it would be black on black.
    mask = code_image(TOTP).convert("L").point(lambda v: 255 - v)
    clear = Image.new("RGBA", mask.size, (0, 0, 0, 0))
    clear.putalpha(mask)
    assert qr_images.decode(encoded(clear, "PNG")) == [TOTP]
    twice = canvas((code_image(TOTP), (20, 20)), (code_image(TOTP), (520, 20)))
    assert qr_images.decode(encoded(twice, "PNG")) == [TOTP]


def test_images_that_cannot_be_read_are_one_clear_error() -> None:
    whole = encoded(code_image(TOTP), "PNG")
    cases = {
        whole[:300]: "cannot be read (damaged or incomplete)",
        encoded(Image.new("RGB", (400, 300), "white"), "JPEG"): "no QR code found in it",
        png_claiming(8000, 8000): "8000 x 8000 pixels, more than this reads (50 million)",
        png_claiming(60000, 60000): "more than this reads (50 million pixels)",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 100: "cannot be read",
    }
    for data, message in cases.items():
        with pytest.raises(qr_images.QrImageError) as info:
            qr_images.decode(data)
        assert message in info.value.message
    with pytest.raises(qr_images.QrImageError, match="larger than 32 MiB"):
        qr_images.decode(whole + b"\x00" * qr_images.MAX_IMAGE_BYTES)


def test_only_image_signatures_are_taken_for_images() -> None:
    assert not qr_images.is_image(b"otpauth://totp/x?secret=A")
    assert not qr_images.is_image(b'{"version": 1}')
    assert not qr_images.is_image(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    assert qr_images.is_image(b"RIFF\x00\x00\x00\x00WEBPVP8 ")


# -- add and import from images -------------------------------------------------------


def test_add_from_a_screenshot_is_the_same_account_as_from_its_link(tmp_path: Path) -> None:
    shot = save(canvas((code_image(TOTP), (300, 200))), tmp_path / "screenshot.png")
    ok(tmp_path / "a", "add", TOTP)
    assert ok(tmp_path / "b", "add", str(shot)) == 'Added "ACME: alice@acme.example" (verification codes).\n'
    assert otps(tmp_path / "b") == otps(tmp_path / "a")


def secret_uri(i: int) -> str:
    secret = base64.b32encode(bytes([i + 1]) * 20).decode()
    return f"otpauth://totp/Svc{i}:user{i}?secret={secret}&issuer=Svc{i}"


def test_import_a_google_export_from_one_photo_per_code(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "add", secret_uri(0))
    store = AccountStore(home)
    for i in range(1, 13):  # thirteen: two QR codes of Google's export, 10 and 3 accounts
        otp_actions.add_uri(store, secret_uri(i))
    uris = ok(home, "export", "--format", "migration", "--no-qr").splitlines()
    assert len(uris) == 2 and all(u.startswith("otpauth-migration://") for u in uris)
    # Photos of the old phone's screen: compressed and a little turned; dark mode for one.
    photos = [
        save(
            canvas((code_image(uris[0], scale=4), (200, 60))).rotate(4, fillcolor="white"),
            tmp_path / "code1.jpg",
            quality=75,
        ),
        save(ImageOps.invert(canvas((code_image(uris[1], scale=4), (250, 120)))), tmp_path / "code2.png"),
    ]
    # One photo: its accounts added, the other code named as missing.
    alone = ok(tmp_path / "alone", "import", str(photos[1])).splitlines()
    assert alone[-2:] == [
        "note: Google Authenticator export: QR code 1 of 2 was not given, so its accounts were not"
        " imported; scan it too",
        "3 added, 0 duplicate, 0 refused",
    ]
    # Both in one import: a complete export, in the old phone's order.
    both = ok(tmp_path / "both", "import", *map(str, photos)).splitlines()
    assert both[-1] == "13 added, 0 duplicate, 0 refused"
    assert not any(line.startswith("note:") for line in both)
    assert otps(tmp_path / "both") == otps(home)


def test_import_names_each_code_of_an_image_that_is_not_an_account(tmp_path: Path) -> None:
    home = tmp_path / "home"
    not_text = segno.make(b"\xff\xfe\x00binary", error="m")  # a code holding bytes, not text
    buf = io.BytesIO()
    not_text.save(buf, kind="png", scale=6)
    shot = canvas(
        (code_image(TOTP), (30, 30)),
        (code_image("https://example.com/not-an-account"), (520, 30)),
        (Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), (30, 380)),
        (code_image("otpauth://totp/Broken:x?secret=!!"), (520, 380)),
    )
    result = agent(home, "import", str(save(shot, tmp_path / "codes.png")))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "added: ACME: alice@acme.example",
        "refused: QR code 2: not an otpauth:// or otpauth-migration:// URI",
        "refused: QR code 3: not an otpauth:// or otpauth-migration:// URI",
        "refused: QR code 4 (Broken: x): the secret is not base32 (letters A-Z and digits 2-7)",
        "1 added, 0 duplicate, 3 refused",
    ]


def vault(home: Path) -> bytes:
    return (home / "vault.pav").read_bytes()


def test_a_wrong_image_among_several_adds_nothing_and_says_which(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(home, "add", secret_uri(20))
    before = vault(home)
    good = save(code_image(TOTP), tmp_path / "good.png")
    blank = save(Image.new("RGB", (500, 400), "white"), tmp_path / "blank.jpg")
    setup = save(code_image("pushauth://enroll?v=2&broker=wss%3A%2F%2Fpush.example"), tmp_path / "setup.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:200])
    cases = [
        (blank, "blank.jpg: no QR code found in it: give a screenshot, or a sharp photo, of the whole code"),
        (
            setup,
            "setup.png: its QR code is a push sign-in enrollment link, not an export: use pushauth-agent"
            " enroll with it",
        ),
        (cut, "cut.png: the image cannot be read (damaged or incomplete)"),
        (tmp_path / "gone.png", "cannot read"),
    ]
    for wrong, message in cases:
        result = agent(home, "import", str(good), str(wrong))
        assert_cli_error(result, contains=message)
        assert result.returncode == 2
        assert vault(home) == before


def test_add_and_enroll_refuse_an_image_without_their_code_naming_the_right_command(tmp_path: Path) -> None:
    home = tmp_path / "home"
    setup = save(code_image("pushauth://enroll?v=2&broker=wss%3A%2F%2Fpush.example"), tmp_path / "setup.png")
    totp_shot = save(code_image(TOTP), tmp_path / "totp.webp")
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    cases = [
        (
            ("add", str(setup)),
            "the QR code in " + str(setup) + " is a push sign-in enrollment link: use "
            "pushauth-agent enroll " + str(setup),
        ),
        (("enroll", str(totp_shot)), "is a verification-code link: use pushauth-agent add"),
        (("reactivate", "ACME", str(totp_shot)), "is a verification-code link: use pushauth-agent add"),
        (
            ("enroll", str(text)),
            "notes.txt is neither a link nor an image of a QR code (PNG, JPEG, GIF or WebP)",
        ),
        (("enroll", str(tmp_path / "missing.jpg")), "cannot read " + str(tmp_path / "missing.jpg")),
        (("add", str(save(code_image("just text"), tmp_path / "t.png"))), "is not a verification-code link"),
    ]
    for args, message in cases:
        result = agent(home, *args)
        assert_cli_error(result, contains=message)
        assert result.returncode == 2
    assert not (home / "vault.pav").exists()  # nothing was saved, nothing made


# -- enroll from an image, at a real broker ---------------------------------------------


def test_enroll_from_a_photo_of_the_setup_code_registers_this_devices_key(tmp_path: Path, rp_api: RP) -> None:
    home = tmp_path / "agent"
    uri = rp_api.enrollment_uri()
    photo = save(
        canvas((code_image(uri, scale=4), (260, 90))).rotate(-3, fillcolor="white"),
        tmp_path / "photo.jpg",
        quality=80,
    )
    result = agent(home, "enroll", str(photo), "--name", "work laptop")
    assert result.returncode == 0, result.stderr
    assert 'Added "alice@example.com"' in result.stdout
    store = AccountStore(home)
    (account,) = store.load()
    (cred,) = rp_api.credentials()
    assert cred["id"] == account.cid and cred["name"] == "work laptop"
    assert base64.urlsafe_b64decode(cred["public_key"] + "==") == signing.public_key(store.seed(account.cid))


def test_an_image_with_two_setup_codes_is_refused_and_neither_code_is_used(
    tmp_path: Path, rp_api: RP
) -> None:
    home = tmp_path / "agent"
    alice, bob = rp_api.enrollment_uri(), rp_api.enrollment_uri("bob", "bob@example.com")
    both = save(
        canvas((code_image(alice, scale=4), (20, 20)), (code_image(bob, scale=4), (520, 20))),
        tmp_path / "two.png",
    )
    result = agent(home, "enroll", str(both))
    assert_cli_error(
        result, contains="two.png holds 2 different QR codes: give an image of only the one to add"
    )
    assert result.returncode == 2
    assert rp_api.credentials() == [] and rp_api.credentials("bob") == []
    for uri in (alice, bob):  # neither token was spent
        ok(home, "enroll", uri, "--name", "laptop")
    assert [a.user for a in AccountStore(home).load()] == ["alice", "bob"]
