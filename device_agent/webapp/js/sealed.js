// Secrets the app must read back as bytes (TOTP secrets, recovery keys) are kept in
// IndexedDB sealed with AES-256-GCM under one key made here as a non-extractable
// WebCrypto key and kept in IndexedDB as the CryptoKey object (out of reach of page
// scripts). What that buys: the secrets are not in the profile's files as plain text (a
// search of a copied profile or disk image finds ciphertext). What it does not: Chromium
// writes a CryptoKey's bytes into IndexedDB's records, so whoever parses those files gets
// the sealing key too; and code running in this origin can ask the browser to decrypt
// (deploy/webapp.md, "Secrets at rest").

import * as db from "./db.js";

const KEY_SETTING = "sealKey";
let keyPromise = null;

function sealingKey() {
  keyPromise ??= (async () => {
    const stored = await db.getSetting(KEY_SETTING);
    if (stored) return stored;
    const key = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, false, ["encrypt", "decrypt"]);
    // Two tabs opening at once: the first key written wins, both use it.
    return db.putSettingOnce(KEY_SETTING, key);
  })();
  return keyPromise;
}

// `what` names the secret (bound as associated data: a sealed TOTP secret cannot be
// swapped in for a recovery key or for another account's secret).
export async function seal(bytes, what) {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const additionalData = new TextEncoder().encode(what);
  const ct = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData }, await sealingKey(), bytes);
  return { iv, ct: new Uint8Array(ct) };
}

export async function open(sealed, what) {
  const additionalData = new TextEncoder().encode(what);
  const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: sealed.iv, additionalData }, await sealingKey(), sealed.ct);
  return new Uint8Array(plain);
}
