"""Adding an account by scanning the QR code with the camera: Chromium's file-backed
fake camera plays a Y4M video of the RP's QR code (made here with segno), and the app
reads it (jsQR in a worker: desktop Linux Chromium has no BarcodeDetector) and enrolls;
another service's verification-code QR code (otpauth://) adds a codes-only account.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pyotp
import pytest
import segno
from PIL import Image
from playwright.async_api import Browser
from support import BrokerProcess
from webapp_world import SHOTS, Opened, Phone, chromium_args, chromium_path, new_phone

from relying_party.sdk import PushAuthClient
from relying_party.totp import new_totp

pytestmark = pytest.mark.asyncio(loop_scope="module")
WIDTH, HEIGHT = 640, 480


def blank_video(path: Path, frames: int = 3) -> Path:
    """A Y4M video of white frames: a camera that sees no QR code."""
    return write_y4m(Image.new("L", (WIDTH, HEIGHT), 255), path, frames)


def qr_video(text: str, path: Path, frames: int = 3) -> Path:
    """A Y4M (4:2:0) video whose every frame is the QR code of `text`, black on white."""
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=4, border=4)
    code = Image.open(io.BytesIO(out.getvalue())).convert("L")
    assert code.width <= HEIGHT, f"QR code of {code.width} px does not fit"
    frame = Image.new("L", (WIDTH, HEIGHT), 255)
    frame.paste(code, ((WIDTH - code.width) // 2, (HEIGHT - code.height) // 2))
    return write_y4m(frame, path, frames)


def write_y4m(frame: Image.Image, path: Path, frames: int) -> Path:
    chroma = bytes([128]) * (WIDTH // 2 * HEIGHT // 2)  # no colour
    with path.open("wb") as y4m:
        y4m.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            y4m.write(b"FRAME\n" + frame.tobytes() + chroma + chroma)
    return path


async def camera_phone(browser: Browser, video: Path) -> Browser:
    """A Chromium whose camera plays `video` (Chromium's file-backed fake capture)."""
    return await browser.browser_type.launch(
        executable_path=chromium_path(full=True),
        args=[
            *chromium_args(),
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
        ],
    )


async def test_add_an_account_by_scanning_its_qr_code(
    rp: PushAuthClient, app_broker: BrokerProcess, tmp_path: Path, browser: Browser, opened: Opened
) -> None:
    assert (Path(__file__).parents[2] / "device_agent/webapp/vendor/jsQR.js").is_file(), (
        "run scripts/build-webapp (make test does)"
    )
    enrollment = await rp.create_enrollment("alice", "alice@contoso.example", totp=new_totp())
    assert enrollment.uri is not None
    video = qr_video(enrollment.uri, tmp_path / "qr.y4m")
    camera = opened("camera", await camera_phone(browser, video))
    phone = await new_phone(camera, app_broker.http_url + "/app/", permissions=["camera"])
    page = phone.page
    await page.get_by_role("button", name="Add account").tap()
    await page.get_by_label("Name of this phone").fill("Scanning phone")
    await page.get_by_role("button", name="Scan QR code").tap()
    await page.locator("#accounts li").wait_for()
    done = await rp.wait_enrollment(enrollment, timeout=10)
    assert done.completed and done.credential is not None
    assert done.credential.name == "Scanning phone"
    assert await page.locator("#accounts li").get_attribute("data-cid") == done.credential.id
    await phone.shot("17-added-by-scanning")
    keep_first_frame(video, SHOTS / "webapp-17-camera-feed.png")


async def test_scan_any_services_verification_code_qr(
    app_broker: BrokerProcess, tmp_path: Path, browser: Browser, opened: Opened
) -> None:
    """The QR code a service shows for "an authenticator app" (otpauth://): a codes-only
    account whose codes are the service's."""
    secret = pyotp.random_base32()
    uri = f"otpauth://totp/Example:ana%40example.org?secret={secret}&issuer=Example"
    camera = opened("camera", await camera_phone(browser, qr_video(uri, tmp_path / "otp.y4m")))
    phone = await new_phone(camera, app_broker.http_url + "/app/", permissions=["camera"])
    page = phone.page
    await page.get_by_role("button", name="Add account").tap()
    await page.get_by_role("button", name="Scan QR code").tap()
    code = page.locator("#accounts li [data-role='code'][data-code]")
    await code.wait_for()
    assert await page.locator("#accounts .acct-name").all_inner_texts() == ["Example: ana@example.org"]
    shown = await code.get_attribute("data-code")
    now = time.time()
    assert shown in {pyotp.TOTP(secret).at(now), pyotp.TOTP(secret).at(now - 30)}


async def test_the_open_scanner_is_accessible_and_cancel_turns_the_camera_off(
    app_broker: BrokerProcess, tmp_path: Path, browser: Browser, opened: Opened
) -> None:
    camera = opened("camera", await camera_phone(browser, blank_video(tmp_path / "blank.y4m")))
    phone = await new_phone(camera, app_broker.http_url + "/app/", permissions=["camera"])
    page = phone.page
    await page.get_by_role("button", name="Add account").tap()
    await page.get_by_role("button", name="Scan QR code").tap()
    await page.locator("#scanner:visible").wait_for()
    # The camera is on: its picture is playing (no QR code in it, so it stays open).
    await page.wait_for_function(
        "() => { const v = document.getElementById('video'); return v.srcObject && v.readyState >= 2; }"
    )
    await phone.shot("27-scanner-open")
    await phone.axe_clean("the camera scanner while open")
    tracks = await page.evaluate_handle("document.getElementById('video').srcObject.getTracks()")
    await page.get_by_role("button", name="Cancel").tap()
    await page.get_by_role("heading", name="Accounts").wait_for()
    # Cancel turns the camera off, not only hides it.
    states = await tracks.evaluate("ts => ts.map(t => t.readyState)")
    assert states and all(s == "ended" for s in states), states


def keep_first_frame(video: Path, png: Path) -> None:
    """The fake camera's picture, kept with the screenshots."""
    raw = video.read_bytes()
    start = raw.index(b"FRAME\n") + len(b"FRAME\n")
    png.parent.mkdir(parents=True, exist_ok=True)
    Image.frombytes("L", (WIDTH, HEIGHT), raw[start : start + WIDTH * HEIGHT]).save(png)


def screenshot_of(text: str, path: Path, *, transparent: bool = False) -> Path:
    """A phone screenshot (1080 x 2000) with the QR code of `text` on it, among other
    things; or the code alone on a transparent background."""
    out = io.BytesIO()
    segno.make(text, error="m").save(out, kind="png", scale=8, border=4)
    code = Image.open(io.BytesIO(out.getvalue())).convert("L")
    if transparent:  # black modules, clear elsewhere: drawn on black, it would be black on black
        clear = Image.new("LA", code.size, (0, 0))
        clear.putalpha(code.point(lambda v: 255 - v))
        clear.save(path)
        return path
    screen = Image.new("RGB", (1080, 2000), (242, 244, 248))
    screen.paste(Image.new("RGB", (1080, 160), (20, 60, 160)), (0, 0))
    screen.paste(code, ((1080 - code.width) // 2, 600))
    screen.save(path)
    return path


async def test_a_picture_of_a_qr_code_adds_its_account(
    rp: PushAuthClient, phone: Phone, tmp_path: Path
) -> None:
    """A QR code that cannot be scanned with this phone's camera (it is on this phone's
    own screen, or was sent as a picture): "Import from a file" takes the picture and reads
    its code as the camera would, a setup link and a verification-code link alike; a
    picture without a code, or one the browser cannot open, says so and adds nothing."""
    page = phone.page
    await page.get_by_role("button", name="Add account").tap()
    chooser = page.get_by_label("Import from a file")
    for bad, words in (
        (
            save_png(Image.new("RGB", (1080, 2000), "white"), tmp_path / "blank.png"),
            "no QR code of an account was found",
        ),
        (
            cut(screenshot_of("otpauth://totp/X:y?secret=JBSWY3DPEHPK3PXP", tmp_path / "cut.png")),
            "cannot be opened",
        ),
    ):
        await chooser.set_input_files(str(bad))
        await page.locator("#import-error", has_text=words).wait_for()
        assert await page.locator("#accounts li").count() == 0
    secret = pyotp.random_base32()
    code_link = f"otpauth://totp/Example:ana%40example.org?secret={secret}&issuer=Example"
    await chooser.set_input_files(str(screenshot_of(code_link, tmp_path / "codes.png", transparent=True)))
    code = page.locator("#accounts li [data-role='code'][data-code]")
    await code.wait_for()
    now = time.time()
    assert await code.get_attribute("data-code") in {
        pyotp.TOTP(secret).at(now),
        pyotp.TOTP(secret).at(now - 30),
    }
    # A service's setup link, from a screenshot of its page: enrolled as a pasted link is.
    enrollment = await rp.create_enrollment("alice", "alice@contoso.example", totp=new_totp())
    assert enrollment.uri is not None
    await page.get_by_role("button", name="Add account").tap()
    await page.get_by_label("Import from a file").set_input_files(
        str(screenshot_of(enrollment.uri, tmp_path / "setup.png"))
    )
    done = await rp.wait_enrollment(enrollment, timeout=20)
    assert done.completed and done.credential is not None
    await page.locator("#accounts li").nth(1).wait_for()


def save_png(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


def cut(path: Path) -> Path:
    """The file cut short, as a download that stopped."""
    path.write_bytes(path.read_bytes()[:400])
    return path
