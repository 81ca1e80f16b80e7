// Google Authenticator's "Transfer accounts" export, otpauth-migration://offline?data=...:
// base64 of a protobuf MigrationPayload (the schema is public in Aegis and
// extract_otp_secrets):
//
//   MigrationPayload { repeated OtpParameters otp_parameters = 1; int32 version = 2;
//                      int32 batch_size = 3; int32 batch_index = 4; int32 batch_id = 5; }
//   OtpParameters    { bytes secret = 1; string name = 2; string issuer = 3;
//                      Algorithm algorithm = 4;  // 0 unspecified, 1 SHA1, 2 SHA256, 3 SHA512, 4 MD5
//                      DigitCount digits = 5;    // 0 unspecified, 1 six, 2 eight
//                      OtpType type = 6;         // 0 unspecified, 1 HOTP, 2 TOTP
//                      int64 counter = 7; }
//
// At most 10 accounts go in one QR code; a bigger export is a batch of codes sharing
// batch_id, numbered batch_index 0..batch_size-1. The agent's reader
// (device_agent/importers/migration.py) in JavaScript, refusal for refusal: the same
// strict protobuf reading, the same accounts, the same reasons.

import { OtpError, account, chars, labelOf, strip, unquote } from "./otp.js";

const PREFIX = "otpauth-migration://offline?";
const MAX_URI_CHARS = 64 * 1024;
const ALGORITHMS = new Map([[0n, "SHA1"], [1n, "SHA1"], [2n, "SHA256"], [3n, "SHA512"]]);
const DIGITS = new Map([[0n, 6], [1n, 6], [2n, 8]]);
const TYPES = new Map([[1n, "hotp"], [2n, "totp"]]);
const VARINT = 0;
const FIXED64 = 1;
const BYTES = 2;
const FIXED32 = 5;

const malformed = (why) => new OtpError("malformed", `not a valid Google Authenticator export: ${why}`);
const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }); // as bytes.decode("utf-8")

// -- protobuf wire format: varints (as BigInts) and byte strings --------------------------

function readVarint(buf, pos) {
  let value = 0n;
  let shift = 0n;
  for (;;) {
    if (pos >= buf.length) throw malformed("truncated data");
    const byte = buf[pos++];
    value |= BigInt(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return [value, pos];
    shift += 7n;
    if (shift >= 70n) throw malformed("a number is too long");
  }
}

// [field number, wire type, value] for each field; unknown wire types are errors.
function* fields(buf) {
  let pos = 0;
  while (pos < buf.length) {
    let tag;
    [tag, pos] = readVarint(buf, pos);
    const number = tag >> 3n;
    const wire = Number(tag & 7n);
    if (number === 0n) throw malformed("field number 0");
    let value;
    if (wire === VARINT) {
      [value, pos] = readVarint(buf, pos);
    } else if (wire === FIXED64 || wire === FIXED32) {
      const size = wire === FIXED64 ? 8 : 4;
      if (pos + size > buf.length) throw malformed("truncated data");
      value = 0n;
      for (let i = size - 1; i >= 0; i--) value = (value << 8n) | BigInt(buf[pos + i]);
      pos += size;
    } else if (wire === BYTES) {
      let size;
      [size, pos] = readVarint(buf, pos);
      if (BigInt(pos) + size > BigInt(buf.length)) throw malformed("truncated data");
      value = buf.subarray(pos, pos + Number(size));
      pos += Number(size);
    } else {
      throw malformed(`unsupported protobuf wire type ${wire}`);
    }
    yield [number, wire, value];
  }
}

// int32/int64 travel as 64-bit two's complement varints.
function signed(value, bits) {
  let v = value & ((1n << 64n) - 1n);
  if (v >= 1n << 63n) v -= 1n << 64n;
  const bound = 1n << BigInt(bits - 1);
  if (v < -bound || v >= bound) throw malformed(`a number does not fit in int${bits}`);
  return v;
}

// -- payload -> accounts ----------------------------------------------------------------

const entryLabel = (name, issuer, position) => labelOf({ name, issuer }) || `entry ${position}`;

// An account, or {refused: {label, reason}} for one this export holds but no app can use.
function parseEntry(buf, position) {
  const f = new Map();
  for (const [number, wire, value] of fields(buf)) {
    const expected = number <= 3n ? BYTES : number <= 7n ? VARINT : wire;
    if (wire !== expected) throw malformed(`account field ${number} has the wrong wire type`);
    f.set(number, value); // protobuf: the last occurrence of a scalar wins
  }
  let name;
  let issuer;
  try {
    name = strip(utf8Strict.decode(f.get(2n) ?? new Uint8Array(0)));
    issuer = strip(utf8Strict.decode(f.get(3n) ?? new Uint8Array(0)));
  } catch {
    return { refused: { label: `entry ${position}`, reason: "its name or issuer is not UTF-8 text" } };
  }
  // The app often stores "Issuer:name" in the name as well; show the name once.
  const colon = name.indexOf(":");
  if (colon >= 0 && issuer && strip(name.slice(0, colon)) === issuer) name = strip(name.slice(colon + 1));
  const label = entryLabel(name, issuer, position);
  const code = (n) => f.get(n) ?? 0n;
  const algorithm = ALGORITHMS.get(code(4n));
  const digits = DIGITS.get(code(5n));
  const kind = TYPES.get(code(6n));
  if (!kind) return { refused: { label, reason: `unsupported token type (code ${code(6n)})` } };
  if (!algorithm) return { refused: { label, reason: "unsupported algorithm (MD5 or unknown)" } };
  if (!digits) return { refused: { label, reason: `unsupported number of digits (code ${code(5n)})` } };
  const counter = kind === "hotp" ? signed(code(7n), 64) : 0n; // malformed as a whole, as the agent's
  try {
    return account({ secret: new Uint8Array(f.get(1n) ?? []), name, issuer, kind, algorithm, digits, counter });
  } catch (exc) {
    if (exc instanceof OtpError) return { refused: { label, reason: exc.message } };
    throw exc;
  }
}

function dataParam(text) {
  if (!text.startsWith(PREFIX)) throw malformed("expected otpauth-migration://offline?data=...");
  let data = null;
  for (const part of text.slice(PREFIX.length).split("&")) {
    const eq = part.indexOf("=");
    const key = eq < 0 ? part : part.slice(0, eq);
    if (key !== "data") continue;
    if (data !== null) throw malformed("data is given twice");
    data = eq < 0 ? "" : part.slice(eq + 1);
  }
  if (!data) throw malformed("no data parameter");
  // Decode %XX but keep "+": some tools paste the base64 without URL-encoding it, and
  // there "+" is a base64 character, never a space.
  const b64 = unquote(data).replaceAll("-", "+").replaceAll("_", "/").replaceAll(" ", "").replace(/=+$/, "");
  if (!/^[A-Za-z0-9+/]*$/.test(b64) || b64.length % 4 === 1) throw malformed("data is not base64");
  const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

// One QR code of an export: {accounts, refused: [{label, reason}], version, batchSize,
// batchIndex, batchId}; throws OtpError ("malformed", "unsupported_version").
export function parseMigration(input) {
  const text = strip(input);
  if (chars(text) > MAX_URI_CHARS) throw malformed("the URI is too long");
  const payload = dataParam(text);
  const entries = [];
  const header = new Map([[2n, 0n], [3n, 0n], [4n, 0n], [5n, 0n]]);
  for (const [number, wire, value] of fields(payload)) {
    if (number === 1n) {
      if (wire !== BYTES) throw malformed("accounts have the wrong wire type");
      entries.push(value);
    } else if (header.has(number)) {
      if (wire !== VARINT) throw malformed(`field ${number} has the wrong wire type`);
      header.set(number, signed(value, 32));
    }
  }
  const [version, size, index, batchId] = [2n, 3n, 4n, 5n].map((n) => Number(header.get(n)));
  if (version !== 0 && version !== 1)
    throw new OtpError("unsupported_version", `Google Authenticator export version ${version} is not supported`);
  if (size < 0 || index < 0 || (size && index >= size)) throw malformed(`QR code ${index + 1} of ${size} is impossible`);
  const accounts = [];
  const refused = [];
  entries.forEach((entry, i) => {
    const got = parseEntry(entry, i + 1);
    if (got.refused) refused.push(got.refused);
    else accounts.push(got);
  });
  return { accounts, refused, version, batchSize: size, batchIndex: index, batchId };
}

// -- writing: the agent's migration.export_uris ---------------------------------------------

const MAX_PER_CODE = 10;
const ALGORITHM_IDS = { SHA1: 1n, SHA256: 2n, SHA512: 3n };
const DIGIT_IDS = new Map([[6, 1n], [8, 2n]]);
const TYPE_IDS = { hotp: 1n, totp: 2n };

function writeVarint(value) {
  let v = BigInt.asUintN(64, BigInt(value)); // a negative int32/int64: ten bytes, as protobuf writes it
  const out = [];
  do {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v ? byte | 0x80 : byte);
  } while (v);
  return out;
}

const field = (number, value) =>
  value instanceof Uint8Array
    ? [...writeVarint((BigInt(number) << 3n) | BigInt(BYTES)), ...writeVarint(value.length), ...value]
    : [...writeVarint((BigInt(number) << 3n) | BigInt(VARINT)), ...writeVarint(value)];

function encodeEntry(a) {
  // Field by field as Google Authenticator writes them: no empty issuer, no counter for TOTP.
  const utf8 = (text) => new TextEncoder().encode(text);
  const out = [...field(1, a.secret), ...field(2, utf8(a.name))];
  if (a.issuer) out.push(...field(3, utf8(a.issuer)));
  out.push(...field(4, ALGORITHM_IDS[a.algorithm]), ...field(5, DIGIT_IDS.get(a.digits)), ...field(6, TYPE_IDS[a.kind]));
  if (a.kind === "hotp") out.push(...field(7, a.counter));
  return Uint8Array.from(out);
}

// otpauth-migration:// URIs, one per QR code of at most 10 accounts, as one batch:
// {uris, refused: [{label, reason}]}. Accounts the format cannot carry (7 digits; a
// period other than 30 s: it has no period field) are refused by name, never changed.
export function exportMigration(accounts, batchId = crypto.getRandomValues(new Uint32Array(1))[0] >>> 1) {
  const refused = [];
  const fitting = [];
  for (const a of accounts) {
    if (!DIGIT_IDS.has(a.digits)) refused.push({ label: labelOf(a), reason: `Google Authenticator has no ${a.digits}-digit codes` });
    else if (a.kind === "totp" && a.period !== 30)
      refused.push({ label: labelOf(a), reason: `Google Authenticator only has 30 s codes, not ${a.period} s` });
    else fitting.push(a);
  }
  const chunks = [];
  for (let i = 0; i < fitting.length; i += MAX_PER_CODE) chunks.push(fitting.slice(i, i + MAX_PER_CODE));
  const uris = chunks.map((chunk, index) => {
    const payload = chunk.flatMap((a) => field(1, encodeEntry(a)));
    payload.push(...field(2, 1), ...field(3, chunks.length), ...field(4, index), ...field(5, batchId));
    const data = btoa(String.fromCharCode(...payload));
    return `${PREFIX}data=${encodeURIComponent(data)}`;
  });
  return { uris, refused };
}
