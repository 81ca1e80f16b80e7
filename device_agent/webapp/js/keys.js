// Ed25519 keys in WebCrypto: made non-extractable, so the private key never leaves
// the browser's key store (not even to this app's own code), and kept in IndexedDB.

import { b64urlDecode } from "./protocol/bytes.js";

export async function newKeyPair() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey };
}

// A recovery key (docs/protocol.md section 16) for an account the service enrolled as
// recoverable: unlike the account's key it must leave this app one day (in a backup, to
// recover on a new phone), so its 32-byte seed is kept, sealed (sealed.js), as the
// Python agent keeps it; the broker and the RP get only the public half.
export async function newRecoveryKey() {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const publicKey = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { seed: pkcs8.slice(-32), publicKey };
}

export async function sign(privateKey, bytes) {
  return new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, privateKey, bytes));
}

// docs/protocol.md section 9: what a verifier MUST reject before the equation, as
// libsodium (the broker's and the RP SDK's verifier) does. The browser's Ed25519 does
// not reject small-order keys or R by itself, and for a small-order key a signature
// can be made without any private key (vectors signing.ed25519).
const P = 2n ** 255n - 19n;
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const ORDER8_Y = [
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
].map((h) => littleEndian(Uint8Array.from(h.match(/../g), (b) => parseInt(b, 16))));
// The y (sign bit ignored) of every encoding of a point of order 1, 2, 4 or 8.
const SMALL_ORDER_Y = new Set([0n, 1n, P - 1n, P, P + 1n, ...ORDER8_Y].map(String));

function littleEndian(bytes) {
  let n = 0n;
  for (let i = bytes.length - 1; i >= 0; i--) n = (n << 8n) | BigInt(bytes[i]);
  return n;
}

// Why a key and signature are rejected before any equation, or null (the reference's
// protocol.signing.refusal).
export function refusal(publicKey, signature) {
  if (publicKey.length !== 32 || signature.length !== 64) return "length";
  const mask = (1n << 255n) - 1n;
  if (littleEndian(signature.subarray(32)) >= L) return "non_canonical_s";
  if (SMALL_ORDER_Y.has(String(littleEndian(signature.subarray(0, 32)) & mask))) return "small_order_r";
  const y = littleEndian(publicKey) & mask;
  if (SMALL_ORDER_Y.has(String(y))) return "small_order_a";
  if (y >= P) return "non_canonical_a";
  return null;
}

export async function verify(publicKey, bytes, signature) {
  if (refusal(publicKey, signature) !== null) return false;
  const key = await crypto.subtle.importKey("raw", publicKey, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, bytes);
}

// A key from a 32-byte seed (PKCS #8 wrapping of RFC 8410): for the known-answer
// vectors, and for a backup's recovery key when it signs a recovery (brokerhttp.js). The
// account keys are never imported: they are made here, non-extractable.
const PKCS8_PREFIX = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

export async function keyFromSeed(seed) {
  const der = new Uint8Array([...PKCS8_PREFIX, ...seed]);
  return crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
}

// The public half of a key made from a seed (a backup blob's id: blobkeys.js).
export async function publicKeyOfSeed(seed) {
  const { x } = await crypto.subtle.exportKey("jwk", await keyFromSeed(seed));
  return b64urlDecode(x);
}
