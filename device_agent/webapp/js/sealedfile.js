// The sealed-file format of the Python agent's vault and backups (device_agent/vault.py,
// docs/backup-format.md): a passphrase, Argon2id, XChaCha20-Poly1305 with the header as
// associated data. No I/O: bytes in, bytes out, so that docs/test-vectors.json checks
// it as it checks the Python side. The primitives are hash-wasm's Argon2id (WebAssembly),
// @noble/hashes (Argon2id in JavaScript where WebAssembly is not allowed, BLAKE2b) and
// @noble/ciphers (vendored by scripts/build-webapp): WebCrypto has neither Argon2id nor
// XChaCha20.
//
// Layout (integers big-endian):
//   magic 8 | version u16 = 1 | kdf u8 = 1 (Argon2id v1.3) | opslimit u32 | memlimit u64
//   | salt 16 | nonce 24 | check 16 | length u64 | ciphertext (length bytes)
// check = BLAKE2b-128(key = derived key, person "pushauth-keychk"): it tells a wrong
// passphrase apart from a damaged file.

import { argon2id as wasmArgon2id } from "../vendor/hash-wasm/argon2.js";
import { argon2idAsync } from "../vendor/noble-hashes/argon2.js";
import { blake2b } from "../vendor/noble-hashes/blake2.js";
import { xchacha20poly1305 } from "../vendor/noble-ciphers/chacha.js";
import { equal } from "./protocol/bytes.js";

export const BACKUP_MAGIC = new TextEncoder().encode("PABACKUP");
const FORMAT_VERSION = 1;
const KDF_ARGON2ID = 1;
const HEADER_SIZE = 8 + 2 + 1 + 4 + 8 + 16 + 24 + 16 + 8;
// What libsodium (and so the Python agent) accepts, and what a crafted file may ask of
// this phone: never terabytes of memory or hours of work.
const OPSLIMIT_MIN = 1;
const OPSLIMIT_MAX = 64;
const MEMLIMIT_MIN = 8192;
const MEMLIMIT_MAX = 4 * 1024 ** 3;
const MAX_PAYLOAD = 64 * 1024 ** 2;
// The Python agent's default cost (device_agent/vault.py KdfParams): 64 MiB, 3 passes.
export const DEFAULT_KDF = Object.freeze({ opslimit: 3, memlimit: 64 * 1024 ** 2 });

export class SealedFileError extends Error {
  // Codes as device_agent/vault.py SealedErrorCode names them.
  constructor(code, message) {
    super(message);
    this.name = "SealedFileError";
    this.code = code;
  }
}

export function person(text) {
  // libsodium pads a short personalization with zero bytes to 16; noble wants all 16.
  const out = new Uint8Array(16);
  out.set(new TextEncoder().encode(text));
  return out;
}
const CHECK_PERSON = person("pushauth-keychk");

// The passphrase as UTF-8 of its NFC form: "é" typed as one code point or as e + accent
// derives the same key (as device_agent/vault.py does).
const passphraseBytes = (passphrase) => new TextEncoder().encode(passphrase.normalize("NFC"));

// Argon2id, two ways with one result (tests/webapp/test_webapp_backup.py holds both to
// libsodium's, the agent's):
// - hash-wasm's WebAssembly: about 0.2 s for the default cost in headless Chromium here
//   (libsodium natively 0.07 s, noble 0.8 s). Its work is one synchronous call, so the
//   page does not repaint (no progress) for that long: a pause short enough to accept
//   rather than move the derivation to a Worker. Its memory is WebAssembly memory grown
//   to the cost (64 MiB by default, DEFAULT_KDF; a file may ask up to 4 GiB, the format's
//   limit, which fails where the browser cannot allocate it).
// - noble's JavaScript: about 0.8 s here and several seconds on a phone, yielding to the
//   page between blocks (with progress), for where WebAssembly cannot run: iOS Lockdown
//   Mode has none, and a Content-Security-Policy without 'wasm-unsafe-eval' (as written
//   for releases before this one: deploy/webapp.md) refuses to compile it.
// Both take m in whole KiB blocks, as libsodium counts them, and p = 1.
const wasmArgon2 = async (password, salt, { t, m, dkLen, onProgress }) => {
  // hash-wasm refuses an empty password, which Argon2id allows (a file opened with no
  // passphrase is a wrong passphrase, as with the agent): noble takes that case.
  if (password.length === 0) return jsArgon2(password, salt, { t, m, dkLen, onProgress });
  onProgress?.(0);
  const key = await wasmArgon2id({
    password,
    salt,
    iterations: t,
    memorySize: m,
    parallelism: 1,
    hashLength: dkLen,
    outputType: "binary",
  });
  onProgress?.(1);
  return key;
};
const jsArgon2 = (password, salt, { t, m, dkLen, onProgress }) =>
  argon2idAsync(password, salt, { t, m, p: 1, dkLen, onProgress });

// Which of the two this browser runs: WebAssembly if it compiles and gives noble's
// result on the cheapest cost (a few milliseconds, once per page), else noble. A
// derivation that fails after this (a crafted file's cost over what the browser can
// allocate) fails: noble would not do better.
export async function chooseArgon2() {
  const probe = [new Uint8Array([1]), new Uint8Array(16), { t: 1, m: 8, dkLen: 32 }];
  try {
    const [fast, slow] = await Promise.all([wasmArgon2(...probe), jsArgon2(...probe)]);
    if (equal(fast, slow)) return { name: "wasm", argon2id: wasmArgon2 };
  } catch {
    // no WebAssembly, or compiling it refused: noble's JavaScript
  }
  return { name: "js", argon2id: jsArgon2 };
}
let chosen = null;
export const argon2 = () => (chosen ??= chooseArgon2());

export async function deriveKey(passphrase, salt, kdf, onProgress) {
  const { argon2id } = await argon2();
  return argon2id(passphraseBytes(passphrase), salt, {
    t: kdf.opslimit,
    m: Math.floor(kdf.memlimit / 1024), // libsodium counts whole KiB blocks too
    dkLen: 32,
    onProgress,
  });
}

const keyCheck = (key) => blake2b(new Uint8Array(0), { dkLen: 16, key, personalization: CHECK_PERSON });

function checkKdf(kdf) {
  const { opslimit, memlimit } = kdf;
  return (
    Number.isInteger(opslimit) &&
    Number.isInteger(memlimit) &&
    opslimit >= OPSLIMIT_MIN &&
    opslimit <= OPSLIMIT_MAX &&
    memlimit >= MEMLIMIT_MIN &&
    memlimit <= MEMLIMIT_MAX
  );
}

// A key derived from a passphrase, with the salt and cost it came from (as
// device_agent/vault.py's SealKey): a later file sealed with it skips Argon2id. `salt`
// is a parameter only so that test vectors can be reproduced.
export async function sealKey(passphrase, { kdf = DEFAULT_KDF, salt, onProgress } = {}) {
  if (!passphrase) throw new SealedFileError("empty_passphrase", "the backup passphrase cannot be empty");
  if (!checkKdf(kdf)) throw new SealedFileError("bad_kdf_params", "Argon2id cost out of range");
  salt ??= crypto.getRandomValues(new Uint8Array(16));
  return { key: await deriveKey(passphrase, salt, kdf, onProgress), salt, kdf };
}

// `payload` sealed under `sk` (sealKey) with a fresh nonce (`nonce` for test vectors only:
// a nonce used twice under one key breaks the encryption).
export function sealWith(magic, sk, payload, nonce = crypto.getRandomValues(new Uint8Array(24))) {
  if (payload.length > MAX_PAYLOAD) throw new SealedFileError("bad_content", "too much data to seal (over 64 MiB)");
  const header = new Uint8Array(HEADER_SIZE);
  const view = new DataView(header.buffer);
  header.set(magic, 0);
  view.setUint16(8, FORMAT_VERSION);
  view.setUint8(10, KDF_ARGON2ID);
  view.setUint32(11, sk.kdf.opslimit);
  view.setBigUint64(15, BigInt(sk.kdf.memlimit));
  header.set(sk.salt, 23);
  header.set(nonce, 39);
  header.set(keyCheck(sk.key), 63);
  view.setBigUint64(79, BigInt(payload.length + 16));
  const ciphertext = xchacha20poly1305(sk.key, nonce, header).encrypt(payload);
  const out = new Uint8Array(HEADER_SIZE + ciphertext.length);
  out.set(header);
  out.set(ciphertext, HEADER_SIZE);
  return out;
}

export async function seal(magic, passphrase, payload, { kdf, salt, nonce, onProgress } = {}) {
  return sealWith(magic, await sealKey(passphrase, { kdf, salt, onProgress }), payload, nonce);
}

// Structure is checked before the (slow) key derivation, so that a truncated or foreign
// file is reported as such whatever passphrase was typed. `what` names the file in errors.
export async function unseal(magic, what, data, passphrase, { onProgress } = {}) {
  const fail = (code, message) => new SealedFileError(code, message);
  if (data.length < magic.length || !equal(data.subarray(0, magic.length), magic))
    throw fail("not_sealed_file", `this is not a pushauth ${what} file`);
  if (data.length < HEADER_SIZE) throw fail("truncated", `the ${what} file is truncated (header incomplete)`);
  const view = new DataView(data.buffer, data.byteOffset, HEADER_SIZE);
  const version = view.getUint16(8);
  if (version !== FORMAT_VERSION)
    throw fail(
      "unsupported_version",
      `the ${what} file has format version ${version}; this app reads version ${FORMAT_VERSION} (a newer pushauth wrote it?)`,
    );
  if (view.getUint8(10) !== KDF_ARGON2ID) throw fail("corrupted", `the ${what} file names an unknown key derivation`);
  const memlimit = view.getBigUint64(15);
  const kdf = { opslimit: view.getUint32(11), memlimit: memlimit > BigInt(MEMLIMIT_MAX) ? Infinity : Number(memlimit) };
  if (!checkKdf(kdf)) throw fail("corrupted", `the ${what} file has out-of-range key derivation parameters`);
  const length = view.getBigUint64(79);
  const body = data.subarray(HEADER_SIZE);
  if (BigInt(body.length) < length)
    throw fail("truncated", `the ${what} file is truncated (${body.length} of ${length} encrypted bytes present)`);
  if (BigInt(body.length) > length) throw fail("corrupted", `the ${what} file has unexpected trailing data`);
  const key = await deriveKey(passphrase, data.slice(23, 39), kdf, onProgress);
  if (!equal(keyCheck(key), data.subarray(63, 79)))
    throw fail("wrong_passphrase", `wrong passphrase for this ${what} (or its header was altered)`);
  try {
    return xchacha20poly1305(key, data.slice(39, 63), data.slice(0, HEADER_SIZE)).decrypt(body);
  } catch {
    throw fail("corrupted", `the ${what} file is damaged or was altered: it fails authentication`);
  }
}
