"""The enrollment QR code as inline SVG (segno: a small, pure-Python, well-kept encoder)."""

from __future__ import annotations

import io

import segno


def svg(data: str, *, title: str) -> str:
    """An SVG that scales with its box; `title` is what a screen reader announces."""
    qr = segno.make(data, error="m", micro=False)
    out = io.BytesIO()
    # No XML declaration and no fixed size: it is embedded in the page and sized by CSS.
    qr.save(
        out,
        kind="svg",
        xmldecl=False,
        svgns=True,
        title=title,
        svgclass="qr",
        lineclass=None,
        omitsize=True,
        border=4,
        dark="#000",
        light="#fff",
    )
    return out.getvalue().decode()
