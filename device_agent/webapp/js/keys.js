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

export async function verify(publicKey, bytes, signature) {
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
