"""The demo relying party web app (DESIGN.md flows 1 to 4), built on the RP SDK."""

from .app import create_app
from .config import Settings

__all__ = ["Settings", "create_app"]
