// A strict msgpack codec for device frames (docs/protocol.md section 4.1;
// protocol/codec.py). The encoder writes the smallest form of each value, so its bytes
// equal the vectors'. The decoder takes exactly one value and refuses what the spec
// refuses: trailing bytes, extension types, repeated map keys, non-string keys
// (a bin key is kept aside as an unknown key), invalid UTF-8.
//
// Values: null, booleans, integers (numbers; BigInt beyond 2^53), strings,
// Uint8Array (bin), arrays, and maps: encoded from Map or plain objects in insertion
// order, decoded to Map. A decoded float becomes a Float so that no validator
// mistakes it for an integer.

import { ProtocolError } from "./errors.js";

export class Float {
  constructor(value) {
    this.value = value;
  }
}

const utf8Strict = new TextDecoder("utf-8", { fatal: true });
const utf8Encoder = new TextEncoder();

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.len = 0;
  }
  room(n) {
    if (this.len + n <= this.buf.length) return;
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    bigger.set(this.buf.subarray(0, this.len));
    this.buf = bigger;
  }
  byte(b) {
    this.room(1);
    this.buf[this.len++] = b;
  }
  bytes(b) {
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  uint(value, size) {
    this.room(size);
    const view = new DataView(this.buf.buffer, this.len, size);
    if (size === 1) view.setUint8(0, value);
    else if (size === 2) view.setUint16(0, value);
    else if (size === 4) view.setUint32(0, value);
    else view.setBigUint64(0, BigInt(value));
    this.len += size;
  }
  result() {
    return this.buf.slice(0, this.len);
  }
}

function writeLength(w, n, fix, fixMax, tags) {
  if (fix !== null && n <= fixMax) w.byte(fix | n);
  else if (tags[0] !== null && n < 0x100) (w.byte(tags[0]), w.uint(n, 1));
  else if (n < 0x10000) (w.byte(tags[1]), w.uint(n, 2));
  else (w.byte(tags[2]), w.uint(n, 4));
}

function writeInt(w, v) {
  const n = typeof v === "bigint" ? v : BigInt(v);
  if (n >= 0n) {
    if (n < 128n) w.byte(Number(n));
    else if (n < 0x100n) (w.byte(0xcc), w.uint(Number(n), 1));
    else if (n < 0x10000n) (w.byte(0xcd), w.uint(Number(n), 2));
    else if (n < 0x100000000n) (w.byte(0xce), w.uint(Number(n), 4));
    else if (n < 1n << 64n) (w.byte(0xcf), w.uint(n, 8));
    else throw new RangeError("integer too large for msgpack");
    return;
  }
  // Negative integers: never in a frame of this version, written for completeness.
  if (n >= -32n) w.byte(Number(n) & 0xff);
  else if (n >= -0x80n) (w.byte(0xd0), w.byte(Number(n) & 0xff));
  else if (n >= -0x8000n) (w.byte(0xd1), w.uint(Number(n) & 0xffff, 2));
  else if (n >= -0x80000000n) (w.byte(0xd2), w.uint(Number(n) >>> 0, 4));
  else (w.byte(0xd3), w.uint(BigInt.asUintN(64, n), 8));
}

function writeValue(w, v) {
  if (v === null || v === undefined) w.byte(0xc0);
  else if (v === false) w.byte(0xc2);
  else if (v === true) w.byte(0xc3);
  else if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) throw new TypeError("frames hold integers only");
    writeInt(w, v);
  } else if (typeof v === "bigint") writeInt(w, v);
  else if (typeof v === "string") {
    const raw = utf8Encoder.encode(v);
    writeLength(w, raw.length, 0xa0, 31, [0xd9, 0xda, 0xdb]);
    w.bytes(raw);
  } else if (v instanceof Uint8Array) {
    writeLength(w, v.length, null, -1, [0xc4, 0xc5, 0xc6]);
    w.bytes(v);
  } else if (Array.isArray(v)) {
    writeLength(w, v.length, 0x90, 15, [null, 0xdc, 0xdd]);
    for (const item of v) writeValue(w, item);
  } else {
    const entries = v instanceof Map ? [...v.entries()] : Object.entries(v);
    writeLength(w, entries.length, 0x80, 15, [null, 0xde, 0xdf]);
    for (const [key, item] of entries) {
      writeValue(w, key);
      writeValue(w, item);
    }
  }
}

export function encode(value) {
  const w = new Writer();
  writeValue(w, value);
  return w.result();
}

// A map key that is bin: not a string key, so an unknown key (section 4.1) where a
// map's keys are fixed. The map keeps one entry under this symbol when it had any, so
// that a map of free keys (a challenge's context) can refuse it: dropped, the entry
// would be neither shown nor hashed (the spec: invalid_field there).
export const BIN_KEY = Symbol("bin key");

class Reader {
  constructor(data) {
    this.data = data;
    this.view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    this.at = 0;
  }
  need(n) {
    if (this.at + n > this.data.length) throw new ProtocolError("malformed", "truncated msgpack value");
  }
  u(size) {
    this.need(size);
    const at = this.at;
    this.at += size;
    if (size === 1) return this.view.getUint8(at);
    if (size === 2) return this.view.getUint16(at);
    if (size === 4) return this.view.getUint32(at);
    const big = this.view.getBigUint64(at);
    return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big;
  }
  i(size) {
    this.need(size);
    const at = this.at;
    this.at += size;
    if (size === 1) return this.view.getInt8(at);
    if (size === 2) return this.view.getInt16(at);
    if (size === 4) return this.view.getInt32(at);
    const big = this.view.getBigInt64(at);
    return big >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(big) : big;
  }
  raw(n) {
    this.need(n);
    const out = this.data.slice(this.at, this.at + n);
    this.at += n;
    return out;
  }
  str(n) {
    try {
      return utf8Strict.decode(this.raw(n));
    } catch (exc) {
      if (exc instanceof ProtocolError) throw exc;
      throw new ProtocolError("malformed", "a msgpack string is not valid UTF-8");
    }
  }
  array(n, depth) {
    const out = [];
    for (let k = 0; k < n; k++) out.push(this.value(depth + 1));
    return out;
  }
  map(n, depth) {
    const out = new Map();
    for (let k = 0; k < n; k++) {
      const key = this.value(depth + 1, true);
      const value = this.value(depth + 1);
      if (key === BIN_KEY) {
        out.set(BIN_KEY, true);
        continue;
      }
      if (out.has(key)) throw new ProtocolError("malformed", "a msgpack map repeats a key");
      out.set(key, value);
    }
    return out;
  }
  value(depth = 0, asKey = false) {
    if (depth > 64) throw new ProtocolError("malformed", "msgpack nested too deep");
    const tag = this.u(1);
    let v;
    if (tag <= 0x7f) v = tag;
    else if (tag >= 0xe0) v = tag - 0x100;
    else if (tag >= 0xa0 && tag <= 0xbf) v = this.str(tag & 0x1f);
    else if (tag >= 0x90 && tag <= 0x9f) v = this.array(tag & 0x0f, depth);
    else if (tag >= 0x80 && tag <= 0x8f) v = this.map(tag & 0x0f, depth);
    else
      switch (tag) {
        case 0xc0: v = null; break;
        case 0xc2: v = false; break;
        case 0xc3: v = true; break;
        case 0xc4: v = this.raw(this.u(1)); break;
        case 0xc5: v = this.raw(this.u(2)); break;
        case 0xc6: v = this.raw(this.u(4)); break;
        case 0xca: this.need(4); v = new Float(this.view.getFloat32(this.at)); this.at += 4; break;
        case 0xcb: this.need(8); v = new Float(this.view.getFloat64(this.at)); this.at += 8; break;
        case 0xcc: v = this.u(1); break;
        case 0xcd: v = this.u(2); break;
        case 0xce: v = this.u(4); break;
        case 0xcf: v = this.u(8); break;
        case 0xd0: v = this.i(1); break;
        case 0xd1: v = this.i(2); break;
        case 0xd2: v = this.i(4); break;
        case 0xd3: v = this.i(8); break;
        case 0xd9: v = this.str(this.u(1)); break;
        case 0xda: v = this.str(this.u(2)); break;
        case 0xdb: v = this.str(this.u(4)); break;
        case 0xdc: v = this.array(this.u(2), depth); break;
        case 0xdd: v = this.array(this.u(4), depth); break;
        case 0xde: v = this.map(this.u(2), depth); break;
        case 0xdf: v = this.map(this.u(4), depth); break;
        case 0xc7: case 0xc8: case 0xc9: case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
          throw new ProtocolError("malformed", "msgpack extension types are not allowed");
        default:
          throw new ProtocolError("malformed", `not a msgpack value (byte 0x${tag.toString(16)})`);
      }
    if (asKey) {
      if (v instanceof Uint8Array) return BIN_KEY;
      if (typeof v !== "string") throw new ProtocolError("malformed", "a msgpack map key is not a string");
    }
    return v;
  }
}

export function decode(data) {
  const reader = new Reader(data);
  const value = reader.value();
  if (reader.at !== data.length) throw new ProtocolError("malformed", "trailing bytes after the msgpack value");
  return value;
}
