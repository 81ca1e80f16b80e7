// The enrollment link (docs/protocol.md section 11.1; protocol/uri.py): strict parse.
// pushauth://enroll?v=2&broker=..&token=..&rp=..&rp_name=..&account=..
//   [&recoverable=0|1][&es=<base64url 32 bytes>][&secret=..&algorithm=..&digits=..&period=..]

import { b64urlDecode, base32Decode } from "./bytes.js";
import { ProtocolError } from "./errors.js";

export const URI_VERSION = "2";
const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
const TOKEN_RE = /^[A-Za-z0-9_-]{16,128}$/;
const BASE32_RE = /^[A-Z2-7]+=*$/;
const NUMBER_RE = /^[0-9]{1,9}$/;

const bad = (why) => new ProtocolError("invalid_uri", `not a valid enrollment link: ${why}`);

// What a refusal calls a parameter whose value is not UTF-8 text (protocol/uri.py's
// _SHOWN_AS): the two labels the device shows, by their meaning.
const SHOWN_AS = { account: "the account name", rp_name: "the service name" };

// application/x-www-form-urlencoded: "+" is a space, then percent-decoding, then UTF-8.
// A value that is not is refused by its parameter's name (`what`), never shown with
// U+FFFD in its place.
function formDecode(text, what) {
  if (/%(?![0-9A-Fa-f]{2})/.test(text)) {
    throw bad(`${what} in the link is not valid percent-encoded UTF-8 (a % that starts no escape)`);
  }
  try {
    return decodeURIComponent(text.replace(/\+/g, " "));
  } catch {
    throw bad(`${what} in the link is not valid UTF-8`);
  }
}

export function isLoopback(host) {
  const h = host.toLowerCase().replace(/\.$/, "").replace(/^\[|\]$/g, "");
  if (h === "localhost" || h === "::1") return true;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return m !== null && m.slice(1).every((p) => Number(p) <= 255) && m[1] === "127";
}

// Why a device must not connect to `broker` (ws:// to a host that is not loopback:
// section 2.1), or null.
export function insecureTransport(broker) {
  const url = new URL(broker);
  if (url.protocol !== "ws:") return null;
  if (isLoopback(url.hostname)) return null;
  return `the broker address ${broker} is not encrypted: wss:// is required for any host but this device; nothing was sent`;
}

function parseTotp(q) {
  const secret = q.get("secret").toUpperCase().replaceAll(" ", "").replace(/=+$/, "");
  if (!secret || !BASE32_RE.test(secret)) throw bad("the TOTP secret is not base32");
  // Python's b32decode refuses lengths that are not a whole number of 5-bit groups.
  if (![0, 2, 4, 5, 7].includes(secret.length % 8)) throw bad("the TOTP secret is not base32");
  if (base32Decode(secret).length < 10) throw bad("the TOTP secret is shorter than 80 bits");
  const algorithm = (q.get("algorithm") ?? "SHA1").toUpperCase();
  if (!["SHA1", "SHA256", "SHA512"].includes(algorithm)) throw bad("TOTP algorithm must be SHA1, SHA256 or SHA512");
  const digitsText = q.get("digits") ?? "6";
  const periodText = q.get("period") ?? "30";
  if (!NUMBER_RE.test(digitsText) || !NUMBER_RE.test(periodText)) throw bad("TOTP digits and period are integers");
  const digits = Number(digitsText);
  const period = Number(periodText);
  if (digits !== 6 && digits !== 8) throw bad("TOTP digits must be 6 or 8");
  if (period < 1 || period > 3600) throw bad("TOTP period must be 1..3600 seconds");
  return { secret, algorithm, digits, period };
}

// What wrapping puts into a link copied from text (an e-mail, a terminal;
// docs/protocol.md 11.1, after RFC 3986 Appendix C), as protocol/uri.py's unwrap removes
// it: a line break (CR, LF) with the spaces and tabs on either side of it, and any tab.
// A space elsewhere stays (read as a space, as before).
const WRAPPING = /[ \t]*[\r\n][\r\n \t]*|\t/g;
export const unwrap = (text) => text.replace(WRAPPING, "");

export function parseEnrollmentUri(input) {
  // ASCII white space only, as protocol/uri.py (trim() also removes U+FEFF and
  // Unicode spaces, which Python's parser keeps: one text, two readings).
  const text = unwrap(input).replace(/^[ \t\n\r\f]+|[ \t\n\r\f]+$/g, "");
  if ([...text].length > 2048) throw bad("too long");
  const prefix = "pushauth://enroll?";
  // The scheme in any case (RFC 3986 section 3.1), the rest exactly, as protocol/uri.py.
  if (text.slice(0, 8).toLowerCase() !== "pushauth" || !text.startsWith("://enroll?", 8)) {
    throw bad("expected pushauth://enroll?...");
  }
  const query = text.slice(prefix.length).split("#")[0];
  const q = new Map();
  for (const part of query.split(/[&]/)) {
    if (part === "") continue;
    const eq = part.indexOf("=");
    const key = formDecode(eq < 0 ? part : part.slice(0, eq), "a parameter name");
    const value = formDecode(eq < 0 ? "" : part.slice(eq + 1), Object.hasOwn(SHOWN_AS, key) ? SHOWN_AS[key] : `parameter '${key}'`);
    if (q.has(key)) throw bad(`parameter '${key}' given twice`);
    q.set(key, value);
  }
  if (q.get("v") !== URI_VERSION)
    throw bad(`unsupported or missing version (this app reads v=${URI_VERSION}; is it up to date?)`);
  for (const key of ["broker", "token", "rp", "rp_name", "account"]) if (!q.get(key)) throw bad(`missing '${key}'`);
  let broker;
  try {
    broker = new URL(q.get("broker"));
  } catch {
    throw bad("broker must be a ws:// or wss:// URL with a host");
  }
  // The WHATWG parser reads "ws:///x" as host "x": the authority is checked as written.
  const authority = /^wss?:\/\/([^/?#]*)/i.exec(q.get("broker"))?.[1] ?? "";
  const host = authority.replace(/^.*@/, "").replace(/:[0-9]*$/, "");
  if (!["ws:", "wss:"].includes(broker.protocol) || !broker.hostname || !host)
    throw bad("broker must be a ws:// or wss:// URL with a host");
  if (broker.username || broker.password || q.get("broker").includes("#"))
    throw bad("broker URL must not carry user info or a fragment");
  if (!TOKEN_RE.test(q.get("token"))) throw bad("malformed token");
  if (!ID_RE.test(q.get("rp"))) throw bad("malformed rp id");
  if ([...q.get("rp_name")].length > 256 || [...q.get("account")].length > 256)
    throw bad("rp_name and account are at most 256 characters");
  const recoverable = q.get("recoverable") ?? "0";
  if (recoverable !== "0" && recoverable !== "1") throw bad("recoverable must be 0 or 1");
  let es = null;
  if (q.has("es")) {
    try {
      es = b64urlDecode(q.get("es"));
    } catch {
      es = new Uint8Array(0);
    }
    if (es.length !== 32) throw bad("es must be 32 bytes in base64url");
  }
  let totp = null;
  if (q.has("secret")) totp = parseTotp(q);
  else if (["algorithm", "digits", "period"].some((k) => q.has(k))) throw bad("TOTP parameters without a secret");
  return {
    broker: q.get("broker"),
    token: q.get("token"),
    rp: q.get("rp"),
    rp_name: q.get("rp_name"),
    account: q.get("account"),
    recoverable: recoverable === "1",
    es,
    totp,
  };
}
