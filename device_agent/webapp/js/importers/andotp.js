// andOTP backups: plain (.json) and encrypted with a password (.json.aes)
// (device_agent/importers/andotp.py; the format is public in andOTP's backup code): a
// JSON list of entries {"secret" (base32), "issuer", "label", "digits", "type": "TOTP" |
// "HOTP" | "STEAM", "algorithm", "period", "counter", ...}; files from before andOTP
// 0.6.3 have no issuer and write "Issuer - name" as the label.
//
// Encrypted (andOTP 0.6.3 and later): 4 bytes big-endian PBKDF2 rounds, a 12-byte salt,
// a 12-byte IV, then the AES-256-GCM ciphertext with its tag; the key PBKDF2-HMAC-SHA1
// of the password, 256 bits. No header to recognize it by: a binary file is tried as
// one once a password is given.

import { OtpError } from "../otp.js";
import { TAG_BYTES, account, collect, decryptedJson, gcmOpen, get, isObject, labelOf, malformed, pbkdf2, refusal, text } from "./entries.js";

const APP = "andOTP";
const SALT_BYTES = 12;
const NONCE_BYTES = 12;
const HEADER_BYTES = 4 + SALT_BYTES + NONCE_BYTES;
// andOTP asks for 140,000-160,000 rounds; far more is not an andOTP file (and would keep
// the phone busy for minutes).
const MAX_ROUNDS = 10_000_000;

export const looksLike = (doc) =>
  Array.isArray(doc) && doc.every((e) => isObject(e) && Object.hasOwn(e, "secret") && Object.hasOwn(e, "type"));

const rounds = (data) => new DataView(data.buffer, data.byteOffset, 4).getUint32(0);

// Whether binary `data` can be an encrypted andOTP backup (a plausible round count, and
// room for a header, a tag and something sealed).
export const mayBeEncrypted = (data) => data.length > HEADER_BYTES + TAG_BYTES && rounds(data) >= 1 && rounds(data) <= MAX_ROUNDS;

export async function decrypt(data, password) {
  if (!password) throw new OtpError("password_required", "this looks like an encrypted andOTP backup: give its password");
  const salt = data.subarray(4, 4 + SALT_BYTES);
  const nonce = data.subarray(4 + SALT_BYTES, HEADER_BYTES);
  const key = await pbkdf2("SHA-1", password, salt, rounds(data));
  const plain = await gcmOpen(key, nonce, data.subarray(HEADER_BYTES));
  if (!plain) throw new OtpError("wrong_password", "wrong password for this andOTP backup (or it is no andOTP backup at all)");
  const doc = decryptedJson(plain);
  if (doc === undefined) throw malformed(APP, "the decrypted backup is not JSON");
  return doc;
}

function entry(e, number) {
  if (!isObject(e)) return refusal(`entry ${number}`, "not a JSON object");
  let name = text(e.label);
  let issuer = text(e.issuer);
  if (!Object.hasOwn(e, "issuer") && name.includes(" - ")) {
    // before 0.6.3: "Issuer - name"
    const at = name.indexOf(" - ");
    [issuer, name] = [text(name.slice(0, at)), text(name.slice(at + 3))];
  }
  return account(labelOf(issuer, name, `entry ${number}`), {
    secret: typeof e.secret === "string" ? e.secret : null,
    name,
    issuer,
    kind: text(e.type) || "totp",
    algorithm: get(e, "algorithm", null),
    digits: get(e, "digits", 6),
    period: get(e, "period", 30),
    counter: get(e, "counter", 0),
  });
}

// The accounts of an andOTP backup's JSON list, in its order.
export function parse(doc) {
  if (!looksLike(doc)) throw malformed(APP, "not a list of entries with a secret and a type");
  return collect(doc.map((e, i) => entry(e, i + 1)));
}
