// RFC 6238 verification codes (RFC 4226 truncation), with WebCrypto's HMAC; the time
// step is floor(unix seconds / period), as device_agent/totp.py computes it.

import { base32Decode } from "./protocol/bytes.js";

const HASHES = { SHA1: "SHA-1", SHA256: "SHA-256", SHA512: "SHA-512" };

// A secret as stored or typed: any case, white space and padding ignored.
const secretBytes = (text) => base32Decode(text.toUpperCase().replace(/[\s=]/g, ""));

export async function hotp(secret, counter, { algorithm = "SHA1", digits = 6 } = {}) {
  const key = await crypto.subtle.importKey("raw", secret, { name: "HMAC", hash: HASHES[algorithm] }, false, [
    "sign",
  ]);
  const msg = new Uint8Array(8);
  new DataView(msg.buffer).setBigUint64(0, BigInt(counter));
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, msg));
  const off = mac[mac.length - 1] & 0x0f;
  const bin = ((mac[off] & 0x7f) << 24) | (mac[off + 1] << 16) | (mac[off + 2] << 8) | mac[off + 3];
  return String(bin % 10 ** digits).padStart(digits, "0");
}

export async function totp(params, atMs = Date.now()) {
  const step = Math.floor(atMs / 1000 / params.period);
  return hotp(secretBytes(params.secret), step, params);
}

// A counter-based (HOTP) account's code at its stored counter (the next one to use).
export const counterCode = (params) => hotp(secretBytes(params.secret), params.counter, params);

export function secondsLeft(period, atMs = Date.now()) {
  return period - (Math.floor(atMs / 1000) % period);
}
