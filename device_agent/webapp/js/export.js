// Moving verification codes to another authenticator app, as `pushauth-agent export`
// does: each account's otpauth:// URI (most authenticator apps and password managers
// take one), and Google Authenticator's "Transfer accounts" QR codes
// (otpauth-migration://, at most 10 accounts each). The URIs are the agent's, byte for
// byte (js/otp.js, js/migration.js; tests/webapp/test_webapp_codes.py compares them).
// What cannot move is named with the reason, never left out in silence.

import { encode } from "../vendor/uqr.js";
import { OtpError, account, decodeSecret, toOtpauth } from "./otp.js";
import { exportMigration } from "./migration.js";

const NO_CODES = "it has no verification codes (sign-in requests stay with this phone: on a new phone, restore a backup or add the account again at the service)";

// items: [{name, label, issuer, totp}] in list order, `totp` the account's unsealed code
// parameters (null for push-only accounts). Returns {links, codes, refused, notInCodes}:
// `refused` ({label, reason}) have no link either; `notInCodes` have a link but no place
// in Google Authenticator's QR codes (7 digits, a period other than 30 s).
export function exportOf(items) {
  const accounts = [];
  const refused = [];
  for (const { name, label, issuer, totp } of items) {
    if (!totp) {
      refused.push({ label: name, reason: NO_CODES });
      continue;
    }
    const { kind = "totp", secret, algorithm, digits, period = 30, counter = 0 } = totp;
    try {
      accounts.push(account({ secret: decodeSecret(secret), name: label ?? "", issuer: issuer ?? "", kind, algorithm, digits, period, counter }));
    } catch (exc) {
      if (!(exc instanceof OtpError)) throw exc;
      refused.push({ label: name, reason: exc.message });
    }
  }
  const migration = exportMigration(accounts);
  return { links: accounts.map(toOtpauth), codes: migration.uris, refused, notInCodes: migration.refused };
}

// Draws the QR code of `text` on `canvas`: black modules on white with the standard
// four-module margin (dark mode too: scanners want dark on light), `scale` px a module.
// Error correction L, as the agent's: the smallest code for an export's ~1 KB.
export function drawQr(canvas, text, scale = 4) {
  const { size, data } = encode(text, { ecc: "L", border: 4 });
  canvas.width = canvas.height = size * scale;
  const g = canvas.getContext("2d");
  g.fillStyle = "#fff";
  g.fillRect(0, 0, canvas.width, canvas.height);
  g.fillStyle = "#000";
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) if (data[y][x]) g.fillRect(x * scale, y * scale, scale, scale);
}
