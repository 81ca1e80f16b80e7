"""What the host-side relying parties (pushauth-pam, pushauth-radius) share: the local
store of users, devices and TOTP secrets, the TOML config reader, the audit line format,
the terminal enrollment and device management (`devices`, `remove`). Each keeps only
what is its own."""
