// Byte helpers shared by the protocol modules: hex (for vectors and logs), base64url
// (RFC 4648 section 5, no padding: the link's `es`), UTF-8, and equality.

const encoder = new TextEncoder();

export function utf8(text) {
  return encoder.encode(text);
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(text) {
  if (text.length % 2 !== 0 || /[^0-9a-f]/i.test(text)) throw new Error("not hex");
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function b64urlEncode(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// Strict: only the base64url alphabet, no padding, no white space (as protocol/b64.py).
export function b64urlDecode(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) throw new Error("not base64url");
  const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  if (b64urlEncode(out) !== text) throw new Error("not canonical base64url");
  return out;
}

// Without an early exit on the first difference (as hmac.compare_digest): it also
// compares key checks and MACs.
export function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export const RFC4648_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

// Base32 in `alphabet` (RFC 4648 by default; backup codes use Crockford's), no padding.
// The decoder takes only the alphabet's characters; leftover bits are dropped, as
// Python's b32decode drops them.
export function base32Encode(bytes, alphabet = RFC4648_BASE32) {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = ((value << 8) | b) & 0xffff;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return bits ? out + alphabet[(value << (5 - bits)) & 31] : out;
}

export function base32Decode(text, alphabet = RFC4648_BASE32) {
  const out = [];
  let bits = 0;
  let value = 0;
  for (const ch of text) {
    const v = alphabet.indexOf(ch);
    if (v < 0) throw new Error("not base32");
    value = ((value << 5) | v) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      out.push((value >> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return new Uint8Array(out);
}

export function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
