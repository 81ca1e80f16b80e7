"""The demo relying party web app (DESIGN.md flows 1 to 4), built on the RP SDK.

The app is in `app` (create_app) and its settings in `config`. Nothing is imported
here: the CLI's user commands and the PAM and RADIUS integrations use the small
modules (passwords, totp, ...) and should not load aiohttp and the whole app with them.
"""
