"""The QR codes in an image: a screenshot or photo of a service's setup page, or of
another authenticator's export screen, for `enroll`, `reactivate`, `add` and `import`.

A desktop has no camera pointed at its own screen: a screenshot is how a QR code
reaches the agent (as other authenticators scan one "from a screenshot"). Decoding is
zxing-cpp's (the ZXing reader in C++, which finds several codes in one image, turned
or inverted); Pillow reads the file. Both are imported only when an image is given:
every other command starts without them.

No I/O here: bytes in, the codes' texts out.
"""

from __future__ import annotations

from collections.abc import Sequence
from io import BytesIO
from typing import TYPE_CHECKING

from .errors import UsageError

if TYPE_CHECKING:
    import zxingcpp
    from PIL.Image import Image as PilImage

# What Pillow is allowed to open: the formats screenshots and phone photos come in.
# Sniffed by signature first, so a text export is never handed to an image decoder.
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")
_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
# Larger than an 8K screen (33 Mpx) or a phone's 48 Mpx photo scaled for sharing, small
# enough that a crafted header cannot make us allocate gigabytes (a "decompression bomb").
MAX_PIXELS = 50_000_000
MAX_IMAGE_BYTES = 32 * 1024**2


class QrImageError(UsageError):
    """The image cannot be read, or holds no QR code: nothing was sent or saved."""


def is_image(data: bytes) -> bool:
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def decode(data: bytes) -> list[str]:
    """The texts of the QR codes in the image `data`, in reading order (top to bottom,
    then left to right), each once. Raises QrImageError if the image cannot be read or
    holds no QR code; its message does not name the file (the caller does)."""
    from PIL import Image, ImageOps

    if len(data) > MAX_IMAGE_BYTES:
        raise QrImageError(f"the image is larger than {MAX_IMAGE_BYTES // 1024**2} MiB")
    try:
        with Image.open(BytesIO(data), formats=IMAGE_FORMATS) as opened:
            width, height = opened.size  # from the header: nothing decoded yet
            if width * height > MAX_PIXELS:
                raise QrImageError(
                    f"the image is {width} x {height} pixels, more than this reads"
                    f" ({MAX_PIXELS // 1_000_000} million); crop it to the QR code"
                )
            image = _flattened(ImageOps.exif_transpose(opened))
    except QrImageError:
        raise
    except Image.DecompressionBombError:  # a header claiming billions of pixels
        raise QrImageError(
            f"the image is more than this reads ({MAX_PIXELS // 1_000_000} million pixels)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        # Pillow's ways of saying "damaged or cut short" (a file still being written,
        # a download that stopped): one line, never a traceback.
        raise QrImageError("the image cannot be read (damaged or incomplete)") from None
    texts = _read(image)
    if not texts:
        raise QrImageError("no QR code found in it: give a screenshot, or a sharp photo, of the whole code")
    return texts


def _flattened(image: PilImage) -> PilImage:
    """A grayscale copy, transparency laid on white: a code drawn in black on a
    transparent background (as SVGs exported to PNG are) would be black on black."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return image.convert("L")


def _read(image: PilImage) -> list[str]:
    import zxingcpp

    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    # The bytes as UTF-8: links are ASCII; a code that is not text becomes text that no
    # command takes, and is refused as such by name rather than dropped.
    texts = (bytes(code.bytes).decode("utf-8", errors="replace") for code in _reading_order(found))
    return list(dict.fromkeys(t for t in texts if t))


def _reading_order(codes: Sequence[zxingcpp.Barcode]) -> list[zxingcpp.Barcode]:
    """Rows top to bottom, each left to right, as a person reads a screen of codes
    (Google Authenticator's export shows them one by one, other apps side by side). A
    code is in a row when its top is above the middle of the row's first code: side by
    side codes are rarely exactly level in a photo."""
    boxes = []
    for code in codes:
        at = code.position
        corners = (at.top_left, at.top_right, at.bottom_right, at.bottom_left)
        ys, xs = [c.y for c in corners], [c.x for c in corners]
        boxes.append((min(ys), (min(ys) + max(ys)) / 2, min(xs), code))
    boxes.sort(key=lambda box: box[0])
    rows: list[list[tuple[float, zxingcpp.Barcode]]] = []
    middle = float("-inf")
    for top, centre, left, code in boxes:
        if top > middle:
            rows.append([])
            middle = centre
        rows[-1].append((left, code))
    return [code for row in rows for _, code in sorted(row, key=lambda item: item[0])]
