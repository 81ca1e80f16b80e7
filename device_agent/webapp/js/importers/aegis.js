// Aegis Authenticator vault exports (.json), plain and encrypted
// (device_agent/importers/aegis.py; the format is public: docs/vault.md of Aegis):
//
//   {"version": 1,
//    "header": {"slots": null | [slot, ...], "params": null | {"nonce": hex, "tag": hex}},
//    "db": {"version": N, "entries": [...]}        // plain
//          | "base64 of AES-256-GCM ciphertext"}   // encrypted
//
// An encrypted vault has a random 256-bit master key wrapped once per slot. Password
// slots (type 1) hold scrypt parameters (n, r, p, salt) and the master key sealed with
// AES-256-GCM under scrypt(password); the db is sealed under the master key, its GCM
// tag kept apart (hex, in key_params / params). WebCrypto has no scrypt: @noble/hashes'
// (vendored by scripts/build-webapp) derives it, loaded only for an encrypted vault.

import { OtpError, pyValue, repr } from "../otp.js";
import { KINDS, account, base64Strict, decryptedJson, gcmOpen, get, isObject, labelOf, refusal, text, utf8Bytes } from "./entries.js";

const PASSWORD_SLOT = 1;
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const DB_VERSIONS = [1, 2, 3];
// scrypt needs 128 * n * r bytes: files that would ask for more than 1 GiB are refused.
const MAX_SCRYPT_MEMORY = 1024 ** 3;

const malformed = (why) => new OtpError("malformed", `not a valid Aegis vault file: ${why}`);

export const looksLike = (doc) => isObject(doc) && ["version", "header", "db"].every((k) => Object.hasOwn(doc, k));

function load(doc) {
  if (doc === null) throw malformed("not JSON");
  if (!looksLike(doc)) throw malformed("no version / header / db");
  if (doc.version !== 1) throw new OtpError("unsupported_version", `Aegis vault file version ${pyValue(doc.version)} is not supported`);
  if (!isObject(doc.header)) throw malformed("the header is not an object");
  return doc;
}

function hex(value, size, what) {
  const ok = typeof value === "string" && value.length % 2 === 0 && /^[0-9a-fA-F]*$/.test(value);
  const raw = ok ? Uint8Array.from(value.match(/../g) ?? [], (h) => parseInt(h, 16)) : null;
  if (raw === null || (size !== null && raw.length !== size)) throw malformed(`${what} is not ${size ?? "some"} bytes of hex`);
  return raw;
}

// AES-256-GCM with the tag kept apart; null when authentication fails.
function gcmParts(params, what) {
  if (!isObject(params)) throw malformed(`${what} has no nonce and tag`);
  return [hex(params.nonce, NONCE_BYTES, `${what} nonce`), hex(params.tag, TAG_BYTES, `${what} tag`)];
}

async function open(key, params, ciphertext, what) {
  const [nonce, tag] = gcmParts(params, what);
  const sealed = new Uint8Array(ciphertext.length + TAG_BYTES);
  sealed.set(ciphertext);
  sealed.set(tag, ciphertext.length);
  return gcmOpen(key, nonce, sealed);
}

async function passwordSlotKey(slot, password) {
  const { n, r, p } = slot;
  if (![n, r, p].every((v) => Number.isSafeInteger(v) && v > 0)) throw malformed("a password slot has invalid scrypt parameters");
  if (n & (n - 1) || 128 * n * r > MAX_SCRYPT_MEMORY || r * p >= 2 ** 30) throw malformed("a password slot has out-of-range scrypt parameters");
  const salt = hex(slot.salt, null, "a slot salt");
  const { scryptAsync } = await import("../../vendor/noble-hashes/scrypt.js");
  let derived;
  try {
    // asyncTick: the page stays responsive (Aegis asks for n = 2^15, r = 8: 32 MiB).
    derived = await scryptAsync(password, salt, { N: n, r, p, dkLen: KEY_BYTES, maxmem: MAX_SCRYPT_MEMORY + 1024 ** 2 });
  } catch (exc) {
    if (!(exc instanceof RangeError)) throw exc;
    throw new OtpError("crypto_unavailable", "this phone has not the memory this Aegis vault's password derivation asks for");
  }
  const wrapped = hex(slot.key, KEY_BYTES, "a slot key");
  return open(derived, slot.key_params, wrapped, "a slot key");
}

async function decryptDb(doc, password) {
  const slots = doc.header.slots;
  if (!Array.isArray(slots)) throw malformed("an encrypted vault without key slots");
  const passwordSlots = slots.filter((s) => isObject(s) && s.type === PASSWORD_SLOT);
  if (!passwordSlots.length) throw new OtpError("unsupported_version", "this Aegis vault has no password slot (biometric only?)");
  if (!password) throw new OtpError("password_required", "this Aegis vault is encrypted: give its password");
  const secret = utf8Bytes(password.normalize("NFC"));
  let master = null;
  for (const slot of passwordSlots) {
    master = await passwordSlotKey(slot, secret);
    if (master) break;
  }
  if (!master) throw new OtpError("wrong_password", "wrong password for this Aegis vault");
  const ciphertext = base64Strict(doc.db);
  if (!ciphertext) throw malformed("the encrypted db is not base64");
  const plain = await open(master, doc.header.params, ciphertext, "the db");
  if (!plain) throw malformed("the encrypted db fails authentication (damaged or altered)");
  const db = decryptedJson(plain);
  if (db === undefined) throw malformed("the decrypted db is not JSON");
  return db;
}

function entry(e, position) {
  if (!isObject(e)) return refusal(`entry ${position}`, "not a JSON object");
  const name = text(e.name);
  const issuer = text(e.issuer);
  const label = labelOf(issuer, name, `entry ${position}`);
  const kind = get(e, "type", null);
  const info = get(e, "info", null);
  if (typeof kind !== "string" || !KINDS.includes(kind))
    return refusal(label, `unsupported token type ${typeof kind === "string" ? repr(kind) : pyValue(kind)} (only totp and hotp)`);
  if (!isObject(info) || typeof info.secret !== "string") return refusal(label, "no secret");
  return account(label, {
    secret: info.secret,
    name,
    issuer,
    kind,
    algorithm: get(info, "algo", "SHA1"),
    digits: get(info, "digits", 6),
    period: get(info, "period", 30),
    counter: get(info, "counter", 0),
  });
}

// The accounts of an Aegis vault export (its JSON, or null if the file is not JSON);
// `password` is needed only if it is encrypted.
export async function parse(doc, password) {
  load(doc);
  const db = typeof doc.db === "string" ? await decryptDb(doc, password) : doc.db;
  if (!isObject(db) || !Array.isArray(db.entries)) throw malformed("the db has no entries list");
  if (!DB_VERSIONS.includes(get(db, "version", null)))
    throw new OtpError("unsupported_version", `Aegis db version ${pyValue(get(db, "version", null))} is not supported`);
  const parsed = { accounts: [], refused: [], notes: [] };
  db.entries.forEach((e, i) => {
    const got = entry(e, i + 1);
    if (got.refused) parsed.refused.push(got.refused);
    else parsed.accounts.push(got);
  });
  return parsed;
}
