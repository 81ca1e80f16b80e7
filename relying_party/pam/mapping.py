"""Which pushauth user a local account signs in as, and who needs no push at all."""

from __future__ import annotations

import grp
import pwd

from .config import Config, name_problem


def pushauth_user(config: Config, local: str) -> str | None:
    """The pushauth user name of local account `local`: its line in the map file when
    there is one (None if it has none), else the template ("{user}@example.com")."""
    if config.user_map is not None:
        name = config.user_map.get(local)
    else:
        name = config.user_template.replace("{user}", local)
    if not name or name_problem(name) is not None:
        return None
    return name


def in_bypass_group(config: Config, local: str) -> str | None:
    """The first bypass group `local` belongs to (primary or supplementary), or None."""
    if not config.bypass_groups:
        return None
    try:
        primary = grp.getgrgid(pwd.getpwnam(local).pw_gid).gr_name
    except KeyError:
        primary = None
    for name in config.bypass_groups:
        if name == primary:
            return name
        try:
            if local in grp.getgrnam(name).gr_mem:
                return name
        except KeyError:
            continue  # a group that does not exist here bypasses nobody
    return None
