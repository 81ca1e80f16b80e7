// What the readers of other apps' export files share (device_agent/importers/entries.py,
// rule for rule): an entry made an account or refused by name with the reason, an
// export's JSON read, AES-256-GCM and PBKDF2 through WebCrypto. Nothing read here
// leaves the phone: the file is read in the page and only the accounts are kept.

import { OtpError, account as otpAccount, decodeSecret, normalizeAlgorithm, parseOtpauth, pyValue, repr, strip } from "../otp.js";

// What Aegis and the otpauth:// reader say of a token type no code can be made for
// (Steam's five letters, Yandex, mOTP): refused by name, never dropped.
export const KINDS = ["totp", "hotp"];
export const TAG_BYTES = 16;

export const malformed = (app, why) => new OtpError("malformed", `not a valid ${app} export: ${why}`);
export const labelOf = (issuer, name, fallback) => (issuer && name ? `${issuer}: ${name}` : issuer || name || fallback);
export const text = (value) => (typeof value === "string" ? strip(value) : "");
export const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);
// Python's dict.get(key, fallback): a key present with null is null, not the fallback.
export const get = (obj, key, fallback) => (isObject(obj) && Object.hasOwn(obj, key) ? obj[key] : fallback);
export const refusal = (label, reason) => ({ refused: { label, reason } });

// Python's truth of a JSON value ("algorithm or 'SHA1'").
export const truthy = (v) => !(v === null || v === undefined || v === false || v === 0 || v === "" || (Array.isArray(v) && !v.length) || (isObject(v) && !Object.keys(v).length));

// One entry's account, or its refusal under `label` with the reason.
export function account(label, { secret, name, issuer, kind, algorithm = "SHA1", digits = 6, period = 30, counter = 0 }) {
  kind = kind.toLowerCase();
  if (!KINDS.includes(kind)) return refusal(label, `unsupported token type ${repr(kind)} (only totp and hotp)`);
  try {
    const raw = typeof secret === "string" ? decodeSecret(secret) : secret;
    if (!raw?.length) return refusal(label, "no secret");
    return otpAccount({
      secret: raw,
      name,
      issuer,
      kind,
      algorithm: normalizeAlgorithm(truthy(algorithm) ? (typeof algorithm === "string" ? algorithm : pyValue(algorithm)) : "SHA1"),
      digits,
      period: kind === "totp" ? period : 30,
      counter: kind === "hotp" ? counter : 0,
    });
  } catch (exc) {
    if (exc instanceof OtpError) return refusal(label, exc.message);
    throw exc;
  }
}

// An entry held as a link: otpauth:// as that reader reads it; any other scheme
// (steam://) refused by its type.
export function fromLink(label, link) {
  if (typeof link !== "string" || !strip(link)) return refusal(label, "no secret");
  const scheme = strip(link).split(":")[0].toLowerCase();
  if (scheme !== "otpauth") return refusal(label, `unsupported token type ${repr(scheme)} (only totp and hotp)`);
  try {
    return parseOtpauth(link);
  } catch (exc) {
    if (exc instanceof OtpError) return refusal(label, exc.message);
    throw exc;
  }
}

// {accounts, refused: [{label, reason}], notes}: what a source holds, as report.py's Parsed.
export function collect(results) {
  const parsed = { accounts: [], refused: [], notes: [] };
  for (const r of results) {
    if (r.refused) parsed.refused.push(r.refused);
    else parsed.accounts.push(r);
  }
  return parsed;
}

// The JSON document, or null if it is none.
export function jsonOf(source) {
  try {
    return JSON.parse(source);
  } catch {
    return null;
  }
}

const utf8 = new TextEncoder();
export const utf8Bytes = (s) => utf8.encode(s);

// AES-256-GCM decryption of ciphertext + tag; null when authentication fails (a wrong
// password, or a damaged file).
export async function gcmOpen(key, nonce, sealed) {
  try {
    const k = await crypto.subtle.importKey("raw", key, "AES-GCM", false, ["decrypt"]);
    return new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce, tagLength: 128 }, k, sealed));
  } catch {
    return null;
  }
}

// PBKDF2-HMAC of the password (UTF-8), 256 bits: 2FAS (SHA-256) and andOTP (SHA-1).
export async function pbkdf2(hash, password, salt, rounds) {
  const k = await crypto.subtle.importKey("raw", utf8Bytes(password), "PBKDF2", false, ["deriveBits"]);
  return new Uint8Array(await crypto.subtle.deriveBits({ name: "PBKDF2", hash, salt, iterations: rounds }, k, 256));
}

// Decrypted bytes read as JSON, as json.loads(plain.decode("utf-8")); undefined if not.
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
export function decryptedJson(plain) {
  try {
    return JSON.parse(strictUtf8.decode(plain));
  } catch {
    return undefined;
  }
}

// base64.b64decode(value, validate=True): the standard alphabet, padded; null if not.
export function base64Strict(value) {
  if (typeof value !== "string" || value.length % 4 || !/^[A-Za-z0-9+/]*={0,2}$/.test(value)) return null;
  try {
    return Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}
