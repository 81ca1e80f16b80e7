"""Import and export of OTP accounts: otpauth:// URIs, Google Authenticator's
otpauth-migration:// export, and Aegis vault files.

Every importer turns its source into a `Parsed` (valid accounts plus entries it
refused, with the reason); `report.merge` then sorts them against the accounts
already held into added / duplicate / refused. Nothing is dropped in silence.
"""
