// Device frames (docs/protocol.md section 5; protocol/frames.py + fields.py): one schema
// per frame type, fields in encoding order; `encodeFrame` writes a device frame,
// `decodeFrame` parses and strictly checks a frame. Keys a type does not define are
// ignored, so a newer broker may add some (section 3.2).

import { BIN_KEY, decode, encode, Float } from "./msgpack.js";
import { ProtocolError } from "./errors.js";

export const PROTOCOL_VERSION = 2;
export const SUBPROTOCOLS = Object.freeze(["pushauth.v2"]);
export const MAX_FRAME_SIZE = 32 * 1024;

const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
const TOKEN_RE = /^[A-Za-z0-9_-]{16,128}$/;
const CODE_RE = /^[a-z0-9_]{1,32}$/;
const TYPED_RE = /^[0-9]{0,8}$/;

const bad = (name, why) => new ProtocolError("invalid_field", `field '${name}': ${why}`);
// Lengths count Unicode code points, as Python's len() does.
const codePoints = (s) => [...s].length;

const str = ({ min = 0, max = 256, pattern = null } = {}) => (name, v) => {
  if (typeof v !== "string") throw bad(name, "expected a string");
  const n = codePoints(v);
  if (n < min || n > max) throw bad(name, `length must be ${min}..${max}`);
  if (pattern && !pattern.test(v)) throw bad(name, "has characters or a form that is not allowed");
  return v;
};
const bin = (length) => (name, v) => {
  if (!(v instanceof Uint8Array)) throw bad(name, "expected binary data");
  if (v.length !== length) throw bad(name, `must be exactly ${length} bytes`);
  return v;
};
const int = (lo, hi) => (name, v) => {
  if (v instanceof Float || typeof v === "boolean") throw bad(name, "expected an integer");
  if (typeof v !== "number" && typeof v !== "bigint") throw bad(name, "expected an integer");
  if (v < lo || v > hi) throw bad(name, `must be in ${lo}..${hi}`);
  return Number(v);
};
const oneOf = (choices) => (name, v) => {
  if (typeof v !== "string" || !choices.includes(v)) throw bad(name, `must be one of ${choices}`);
  return v;
};
const bool = (name, v) => {
  if (typeof v !== "boolean") throw bad(name, "expected true or false");
  return v;
};
const optional = (inner) => (name, v) => (v === null ? null : inner(name, v));
// A key added within version 2 (section 3.2; protocol/fields.py Added): a broker that
// predates it never sends it, so a missing key (or nil) leaves the field out of the
// decoded frame, and the encoder leaves it out when nil.
const added = (inner) => Object.assign((name, v) => inner(name, v), { added: true });
const listOf = (inner, max = 64) => (name, v) => {
  if (!Array.isArray(v)) throw bad(name, "expected a list");
  if (v.length > max) throw bad(name, `at most ${max} items`);
  return v.map((item, i) => inner(`${name}[${i}]`, item));
};
const record = (fields) => (name, v) => {
  if (!(v instanceof Map)) throw bad(name, "expected a map");
  const out = {};
  for (const [key, check] of fields) {
    if (!v.has(key)) throw bad(`${name}.${key}`, "missing");
    out[key] = check(`${name}.${key}`, v.get(key));
  }
  return out;
};
const IDENT = str({ min: 1, max: 64, pattern: ID_RE });
const CODE = str({ min: 1, max: 32, pattern: CODE_RE });
const TEXT = str({ max: 256 });
const NAME = str({ min: 1, max: 64 });
const MS = int(0, 2 ** 53);
const RID = int(0, 2 ** 31);
// The sign-in context: untrusted text, kept in an object without a prototype so that
// a key such as "__proto__" is data like any other.
const CONTEXT = (name, v) => {
  if (!(v instanceof Map)) throw bad(name, "expected a map");
  if (v.size > 16) throw bad(name, "at most 16 entries");
  const out = Object.create(null);
  if (v.has(BIN_KEY)) throw bad(name, "a key is bin, not a string");
  for (const [key, value] of v) out[str({ min: 1, max: 32 })(`${name} key`, key)] = TEXT(`${name}[${key}]`, value);
  return out;
};

const B = "broker";
const D = "device";

export const FRAMES = Object.freeze({
  hello: [B, [["nonce", bin(32)], ["time", MS], ["max_frame", int(1024, 1 << 20)], ["node", str({ max: 64 })]]],
  welcome: [B, [
    ["accepted", listOf(IDENT)],
    ["rejected", listOf(record([["cid", IDENT], ["code", CODE]]))],
    ["pending", int(0, 1 << 16)],
    ["notices", int(0, 1 << 16)],
  ]],
  enrolled: [B, [["rid", RID], ["cid", IDENT], ["rp", IDENT], ["rp_name", TEXT], ["user", TEXT], ["account", TEXT]]],
  challenge: [B, [
    ["ch", IDENT], ["cid", IDENT], ["rp", IDENT], ["rp_name", TEXT], ["account", TEXT],
    ["nonce", bin(32)], ["rp_nonce", bin(32)], ["ctx", CONTEXT], ["created", MS], ["expires", MS],
    ["digits", int(1, 8)],
    // Added within version 2: false for a request without number matching (no number
    // anywhere: approve / deny / report, the empty number signed); left out otherwise.
    ["nm", added(bool)],
  ]],
  answer_result: [B, [["ch", IDENT], ["outcome", CODE]]],
  cancel: [B, [["ch", IDENT], ["reason", CODE], ["by", added(IDENT)]]],
  revoked: [B, [["cid", IDENT], ["reason", CODE], ["rid", optional(RID)]]],
  recovery_notice: [B, [["notice", IDENT], ["cid", IDENT], ["new_cid", IDENT], ["new_name", NAME], ["time", MS], ["recovery_ts", added(MS)]]],
  recovery_result: [B, [["notice", IDENT], ["cid", IDENT], ["outcome", CODE], ["rid", optional(RID)]]],
  error: [B, [["code", CODE], ["message", str({ max: 512 })], ["ref", optional(str({ max: 64 }))]]],
  authenticate: [D, [["creds", listOf(record([["cid", IDENT], ["sig", bin(64)]]), 64)]]],
  enroll: [D, [
    ["rid", RID], ["token", str({ min: 16, max: 128, pattern: TOKEN_RE })], ["pk", bin(32)], ["name", NAME],
    ["rpk", optional(bin(32))], ["binding", optional(bin(64))], ["sig", bin(64)],
  ]],
  answer: [D, [
    ["ch", IDENT], ["cid", IDENT], ["decision", oneOf(["approve", "deny", "fraud"])],
    ["number", str({ max: 8, pattern: TYPED_RE })], ["ts", MS], ["ctx_hash", bin(32)], ["sig", bin(64)],
  ]],
  revoke: [D, [["rid", RID], ["cid", IDENT]]],
  // Optional extension (docs/protocol.md appendix A): Web Push wake-ups.
  push_subscribe: [D, [
    ["rid", RID], ["cids", listOf(IDENT, 64)], ["endpoint", optional(str({ min: 1, max: 2048 }))],
    ["p256dh", optional(bin(65))], ["auth", optional(bin(16))],
  ]],
  push_subscribed: [B, [["rid", RID], ["key", bin(65)], ["cids", listOf(IDENT, 64)]]],
  // Added within version 2: a page's keep-alive (it cannot send WebSocket pings).
  ping: [D, [["rid", RID]]],
  pong: [B, [["rid", RID]]],
  recovery_answer: [D, [
    ["rid", RID], ["notice", IDENT], ["cid", IDENT], ["decision", oneOf(["confirm", "disown"])],
    ["ts", MS], ["sig", bin(64)],
  ]],
});

// A frame: {t, ...fields}. Encoded in the table's order, then v, then t (section 4.1),
// so the bytes equal docs/test-vectors.json's.
export function encodeFrame(frame) {
  const spec = FRAMES[frame.t];
  if (!spec) throw new TypeError(`unknown frame type ${frame.t}`);
  const body = new Map();
  for (const [name, check] of spec[1]) {
    const value = frame[name] ?? null;
    if (value === null && check.added) continue;
    body.set(name, value);
  }
  body.set("v", PROTOCOL_VERSION);
  body.set("t", frame.t);
  return encode(body);
}

// Steps 3-7 of section 7.1 as a device runs them (section 7.2): size, encoding,
// version, type (unknown: not fatal, "unknown_frame"), fields. Returns
// {t, sender, ...fields}; the caller checks direction and state.
export function decodeFrame(data, maxSize = MAX_FRAME_SIZE) {
  if (data.length > maxSize)
    throw new ProtocolError("frame_too_large", `frame of ${data.length} bytes exceeds ${maxSize}`);
  const raw = decode(data);
  if (!(raw instanceof Map)) throw new ProtocolError("malformed", "a frame is a msgpack map");
  const v = raw.get("v");
  if (typeof v !== "number" && typeof v !== "bigint") throw new ProtocolError("malformed", "missing protocol version 'v'");
  if (v !== PROTOCOL_VERSION)
    throw new ProtocolError("unsupported_version", `version ${v} is not supported (${PROTOCOL_VERSION} is)`);
  const t = raw.get("t");
  if (typeof t !== "string") throw new ProtocolError("malformed", "missing frame type 't'");
  const spec = Object.hasOwn(FRAMES, t) ? FRAMES[t] : null;
  if (!spec) throw new ProtocolError("unknown_frame", `unknown frame type ${JSON.stringify(t.slice(0, 32))}`);
  const out = { t, sender: spec[0] };
  for (const [name, check] of spec[1]) {
    if (check.added && (!raw.has(name) || raw.get(name) === null)) continue;
    if (!raw.has(name)) throw new ProtocolError("invalid_field", `${t}: missing field '${name}'`);
    out[name] = check(name, raw.get(name));
  }
  return out;
}
