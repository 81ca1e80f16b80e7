// 2FAS Authenticator backups (.2fas), plain and encrypted, schema versions 2 to 4
// (device_agent/importers/twofas.py; the format is public in the 2FAS apps' backup code):
//
//   {"schemaVersion": 4, "services": [service, ...], "servicesEncrypted": "..."?, ...}
//   service = {"name", "secret" (base32), "otp": {"account", "issuer", "digits", "period",
//              "algorithm", "tokenType": "TOTP" | "HOTP" | "STEAM", "counter"},
//              "order": {"position": n}}
//
// An encrypted backup has `services` empty and `servicesEncrypted` =
// "base64(ciphertext + GCM tag):base64(salt):base64(iv)", the key PBKDF2-HMAC-SHA256 of
// the password over the salt, 10,000 rounds, 256 bits; AES-256-GCM. WebCrypto does both.

import { OtpError } from "../otp.js";
import { account, base64Strict, collect, decryptedJson, gcmOpen, get, isObject, labelOf, malformed, pbkdf2, refusal, text, truthy } from "./entries.js";

const APP = "2FAS";
const PBKDF2_ROUNDS = 10_000;

export const looksLike = (doc) => isObject(doc) && Object.hasOwn(doc, "services") && Object.hasOwn(doc, "schemaVersion");
export const isEncrypted = (doc) => looksLike(doc) && truthy(doc.servicesEncrypted);

async function decrypted(sealed, password) {
  if (!password) throw new OtpError("password_required", "this 2FAS backup is encrypted: give its password");
  const parts = typeof sealed === "string" ? sealed.split(":").map(base64Strict) : [];
  if (parts.length !== 3 || parts.includes(null)) throw malformed(APP, "servicesEncrypted is not three base64 parts");
  const [data, salt, iv] = parts;
  const key = await pbkdf2("SHA-256", password, salt, PBKDF2_ROUNDS);
  const plain = await gcmOpen(key, iv, data);
  if (!plain) throw new OtpError("wrong_password", "wrong password for this 2FAS backup");
  const services = decryptedJson(plain);
  if (services === undefined) throw malformed(APP, "the decrypted services are not JSON");
  return services;
}

function position(service) {
  const order = isObject(service) ? service.order : null;
  const at = isObject(order) ? order.position : null;
  return Number.isInteger(at) ? at : Infinity;
}

function entry(service, number) {
  if (!isObject(service)) return refusal(`service ${number}`, "not a JSON object");
  const otp = isObject(service.otp) ? service.otp : {};
  const issuer = text(otp.issuer) || text(service.name);
  const name = text(otp.account) || text(otp.label);
  return account(labelOf(issuer, name, `service ${number}`), {
    secret: typeof service.secret === "string" ? service.secret : null,
    name,
    issuer,
    kind: text(otp.tokenType) || "totp",
    algorithm: get(otp, "algorithm", null),
    digits: get(otp, "digits", 6),
    period: get(otp, "period", 30),
    counter: get(otp, "counter", 0),
  });
}

// The accounts of a 2FAS backup (its JSON), in the app's order.
export async function parse(doc, password) {
  const services = isEncrypted(doc) ? await decrypted(doc.servicesEncrypted, password) : doc.services;
  if (!Array.isArray(services)) throw malformed(APP, "services is not a list");
  const ordered = services.map((s, i) => [i + 1, s]);
  ordered.sort(([, a], [, b]) => (position(a) < position(b) ? -1 : position(a) > position(b) ? 1 : 0)); // stable, as sorted()
  return collect(ordered.map(([number, service]) => entry(service, number)));
}
