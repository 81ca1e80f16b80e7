"""Values that `pushauth-agent`'s argument parser shows or checks (choices, defaults, help).

Kept here, in a module that imports nothing, rather than in the modules that act on
them: the parser is built on every run, `--help` included, and importing those modules
(the vault's and backups' crypto, the importers, the frame types) would make every
command pay for all of them.
"""

from __future__ import annotations

EXPORT_FORMATS = ("otpauth", "migration")
DEFAULT_BACKUP_NAME = "default"
DEVICE_NAME_HELP = 'default: the name restore --device-name gave this device, else "pushauth-agent on HOST"'
# The image files whose QR codes `enroll`, `reactivate`, `add` and `import` read
# (device_agent/qr_images.py).
IMAGE_FORMATS_SAID = "PNG, JPEG, GIF or WebP"
