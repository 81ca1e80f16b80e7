// The keys of a backup copy on the broker, and its wrapping (docs/backup-format.md
// section 4; device_agent/backup_keys.py). Two secrets, so that whoever steals the
// broker's whole Redis and logs cannot test passphrase guesses offline: the passphrase
// and the backup code, 144 random bits this app makes once and the user writes down.
//
//   salt   = BLAKE2b-128(canonical("pushauth/backup-salt/v1", code, origin, name), person "pushauth-bsalt")
//   argon  = Argon2id(passphrase, salt)
//   master = BLAKE2b-256(argon, key = code, person "pushauth-bmastr")
//   seed   = BLAKE2b-256("", key = master, person "pushauth-bsign")   Ed25519 seed: the
//            blob's id is its public key, and it signs every request for the blob
//   wrap   = BLAKE2b-256("", key = master, person "pushauth-bwrap")   XChaCha20-Poly1305 key
//
// No I/O; checked against docs/backup-vectors.json.

import { blake2b } from "../vendor/noble-hashes/blake2.js";
import { xchacha20poly1305 } from "../vendor/noble-ciphers/chacha.js";
import { base32Decode, base32Encode, concat, equal } from "./protocol/bytes.js";
import { canonical } from "./protocol/signing.js";
import { DEFAULT_KDF, deriveKey, person } from "./sealedfile.js";

const CODE_PREFIX = "PAB1";
const SECRET_BYTES = 18;
const CHECK_BYTES = 2;
const CHARS = ((SECRET_BYTES + CHECK_BYTES) * 8) / 5; // 32
// Crockford's base32: no I, L, O or U, so that 1/I/L and 0/O cannot be confused.
const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const READ_AS = { I: "1", L: "1", O: "0" };
const WRAP_MAGIC = new TextEncoder().encode("PABWRAP1");
const HINT = "compare it with what you wrote down (case, dashes and spaces do not matter)";

export class BackupCodeError extends Error {
  constructor(message) {
    super(message);
    this.name = "BackupCodeError";
  }
}

const digest = (data, who, { key, size = 32 } = {}) => blake2b(data, { dkLen: size, key, personalization: person(who) });
const check = (secret) => digest(secret, "pushauth-bcchk", { size: CHECK_BYTES });

export function newCode() {
  return crypto.getRandomValues(new Uint8Array(SECRET_BYTES));
}

// As the user writes it down: PAB1-XXXX-XXXX-... (8 groups of 4).
export function codeText(secret) {
  const raw = base32Encode(concat([secret, check(secret)]), CROCKFORD); // 20 bytes: 32 characters
  return [CODE_PREFIX, ...raw.match(/.{4}/g)].join("-");
}

// A code as typed: any case, dashes and spaces anywhere, the prefix optional; I and L
// read as 1, O as 0. The secret, or a BackupCodeError saying what is wrong.
export function parseCode(typed) {
  let text = [...typed.toUpperCase()]
    .filter((ch) => !"- \t\r\n".includes(ch))
    .map((ch) => READ_AS[ch] ?? ch)
    .join("");
  if (text.startsWith(CODE_PREFIX) && text.length !== CHARS) text = text.slice(CODE_PREFIX.length);
  if (!text) throw new BackupCodeError("no backup code was given");
  const bad = [...new Set([...text].filter((ch) => !CROCKFORD.includes(ch)))].sort();
  if (bad.length) throw new BackupCodeError(`a backup code has only letters and digits, not ${bad.map((c) => `'${c}'`).join(" ")}: ${HINT}`);
  if (text.length !== CHARS)
    throw new BackupCodeError(`a backup code has ${CHARS} letters and digits after ${CODE_PREFIX}, this one ${text.length}: ${HINT}`);
  const raw = base32Decode(text, CROCKFORD);
  const secret = raw.slice(0, SECRET_BYTES);
  if (!equal(check(secret), raw.slice(SECRET_BYTES)))
    throw new BackupCodeError(`this backup code is mistyped (its check letters do not match): ${HINT}`);
  return secret;
}

// The keys of the backup `name` on the broker at `origin` (its HTTP origin). The cost is
// fixed, not read from anything stored: a new phone must derive the same keys from what
// the user types.
export async function blobKeys(passphrase, code, origin, name, { kdf = DEFAULT_KDF, onProgress } = {}) {
  const salt = digest(canonical("pushauth/backup-salt/v1", code, origin, name), "pushauth-bsalt", { size: 16 });
  const master = digest(await deriveKey(passphrase, salt, kdf, onProgress), "pushauth-bmastr", { key: code });
  return {
    seed: digest(new Uint8Array(0), "pushauth-bsign", { key: master }),
    wrap: digest(new Uint8Array(0), "pushauth-bwrap", { key: master }),
  };
}

const associated = (blobPk) => concat([WRAP_MAGIC, blobPk]);

// What the broker stores: magic, nonce, XChaCha20-Poly1305 of the sealed backup (magic
// and blob id as associated data). `nonce` only for the known-answer vectors.
export function wrap(keys, blobPk, sealed, nonce = crypto.getRandomValues(new Uint8Array(24))) {
  const box = xchacha20poly1305(keys.wrap, nonce, associated(blobPk)).encrypt(sealed);
  return concat([WRAP_MAGIC, nonce, box]);
}

export function unwrap(keys, blobPk, stored) {
  const head = WRAP_MAGIC.length + 24;
  if (stored.length < head + 16 || !equal(stored.subarray(0, WRAP_MAGIC.length), WRAP_MAGIC))
    throw new BackupCodeError("the server's copy of the backup is not a pushauth server backup (altered?)");
  try {
    return xchacha20poly1305(keys.wrap, stored.slice(WRAP_MAGIC.length, head), associated(blobPk)).decrypt(stored.slice(head));
  } catch {
    throw new BackupCodeError("the server's copy of the backup fails authentication: it was altered");
  }
}
