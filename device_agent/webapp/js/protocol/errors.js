// Protocol errors as a type with stable codes (docs/protocol.md section 14;
// protocol/errors.py): the close code of each fatal one.

export const CLOSE_CODES = Object.freeze({
  malformed: 4400,
  invalid_field: 4400,
  unexpected_frame: 4400,
  unsupported_version: 4406,
  frame_too_large: 4413,
  not_authenticated: 4401,
  auth_timeout: 4408,
  rate_limited: 4429,
  internal: 1011,
});

export class ProtocolError extends Error {
  constructor(code, message, ref = null) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
    this.ref = ref;
  }

  get fatal() {
    return this.code in CLOSE_CODES;
  }

  get closeCode() {
    return CLOSE_CODES[this.code] ?? null;
  }
}
