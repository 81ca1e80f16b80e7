"""The name a service lists this device under (enroll, reactivate, restore)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from protocol import fields
from protocol.errors import ProtocolError

from .errors import UsageError


def default_device_name() -> str:
    """How the service lists this device unless --name says otherwise. The bare host
    name ("vm", "localhost") says nothing to someone reading their Security info page;
    naming the app as well tells them which authenticator it is, as the app's own
    name does for a phone authenticator."""
    host = socket.gethostname().split(".")[0] or "this computer"
    return f"pushauth-agent on {host}"[:64]


# A vault setting (never in a backup: it names this device, not the accounts): the name
# `restore --device-name` gave. A later enroll or reactivate without --name uses it, so a
# service lists the restored device under the one name the user chose for it.
SETTING = "device_name"


def device_name_for(given: str | None, settings: Mapping[str, Any]) -> str:
    """The name to register with: --name, else the one restore was given, else the default."""
    chosen = given if given is not None else settings.get(SETTING) or default_device_name()
    return check_device_name(chosen)


def check_device_name(name: str) -> str:
    """The broker's rule (the enroll frame's `name`), checked before anything is sent."""
    try:
        fields.DEVICE_NAME("device name", name)
    except ProtocolError as exc:  # "field 'device name': length must be 1..64", ...
        raise UsageError(exc.message.replace("field 'device name':", "the device name:", 1)) from None
    return name
