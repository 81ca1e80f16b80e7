// Canonical signing bytes (docs/protocol.md section 9; protocol/signing.py): each item a
// 4-byte big-endian length and its bytes, the first item the domain string. Strings are
// UTF-8, integers 8-byte big-endian unsigned, binary as is, nil the empty item.

import { concat, utf8 } from "./bytes.js";

export const DOMAIN = Object.freeze({
  auth: "pushauth/auth/v1",
  enroll: "pushauth/enroll/v2",
  binding: "pushauth/enroll-binding/v1",
  answer: "pushauth/answer/v2",
  context: "pushauth/context/v1",
  backup: "pushauth/backup/v1",
  recoveryKey: "pushauth/recovery-key/v1",
  recover: "pushauth/recover/v2",
  recoveryAnswer: "pushauth/recovery-answer/v1",
});

// An integer item: a JS number up to 2^53 (all the protocol's times) or a BigInt.
export class U64 {
  constructor(value) {
    const big = BigInt(value);
    if (big < 0n || big >= 1n << 64n) throw new RangeError("a u64 item is 0..2^64-1");
    this.value = big;
  }
}

function item(value) {
  if (value === null || value === undefined) return new Uint8Array(0);
  if (typeof value === "string") return utf8(value);
  if (value instanceof Uint8Array) return value;
  if (value instanceof U64) {
    const raw = new Uint8Array(8);
    new DataView(raw.buffer).setBigUint64(0, value.value);
    return raw;
  }
  // Numbers are refused on purpose: whether 42 means a u64 or a string must be said.
  throw new TypeError(`not a signing item: ${typeof value}`);
}

export function canonical(domain, ...items) {
  const parts = [];
  for (const raw of [utf8(domain), ...items.map(item)]) {
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, raw.length);
    parts.push(len, raw);
  }
  return concat(parts);
}

export const authBytes = (helloNonce, cid) => canonical(DOMAIN.auth, helloNonce, cid);

export const enrollBytes = (helloNonce, token, pk, name, rpk) =>
  canonical(DOMAIN.enroll, helloNonce, token, pk, name, rpk ?? null);

export const bindingBytes = (rp, token, es, pk, name, rpk) =>
  canonical(DOMAIN.binding, rp, token, es, pk, name, rpk ?? null);

export const answerBytes = ({ rp, ch, nonce, rpNonce, cid, decision, number, ts, ctxHash }) =>
  canonical(DOMAIN.answer, rp, ch, nonce, rpNonce, cid, decision, number, new U64(ts), ctxHash);

export const backupBytes = (op, blobId, ts, bodyHash) =>
  canonical(DOMAIN.backup, op, blobId, new U64(ts), bodyHash);

export const recoveryKeyBytes = (cid, recoveryPk, ts) =>
  canonical(DOMAIN.recoveryKey, cid, recoveryPk, new U64(ts));

// The ts a device signs a recovery-key rotation with (docs/protocol.md section 16,
// "Renewal"; protocol/signing.py rotation_ts): its clock, or just after a recovery from
// the credential that is not older (the RP takes only a newer rotation), but never more
// than ROTATION_AHEAD_MAX_MS ahead of its clock (the broker delivers recoveryTs; one far
// ahead would make the RP refuse the user's later rotations): null then.
export const ROTATION_AHEAD_MAX_MS = 10 * 60 * 1000;
export function rotationTs(nowMs, recoveryTs) {
  if (recoveryTs === null || recoveryTs === undefined || recoveryTs < nowMs) return nowMs;
  return recoveryTs + 1 - nowMs <= ROTATION_AHEAD_MAX_MS ? recoveryTs + 1 : null;
}

export const recoverBytes = (rp, oldCid, pk, name, recoveryPk, ts) =>
  canonical(DOMAIN.recover, rp, oldCid, pk, name, recoveryPk, new U64(ts));

export const recoveryAnswerBytes = (notice, cid, newCid, decision, ts) =>
  canonical(DOMAIN.recoveryAnswer, notice, cid, newCid, decision, new U64(ts));

// Keys sorted by their UTF-8 bytes (not UTF-16 code units, which order some
// characters differently: section 10).
function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export function contextBytes(ctx) {
  const keys = Object.keys(ctx).sort((a, b) => compareBytes(utf8(a), utf8(b)));
  const items = [new U64(keys.length)];
  for (const key of keys) items.push(key, ctx[key]);
  return canonical(DOMAIN.context, ...items);
}

export async function contextHash(ctx) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", contextBytes(ctx)));
}
