// Verification-code accounts from otpauth:// URIs (Google's Key Uri Format), the QR
// codes of every service that offers an authenticator app:
//
//   otpauth://TYPE/[ISSUER:]NAME?secret=BASE32[&issuer=ISSUER][&algorithm=SHA1]
//       [&digits=6][&period=30][&counter=N]
//
// The agent's reader in JavaScript: device_agent/accounts_model.py (the rules every
// account meets) and device_agent/importers/otpauth.py (the URI), down to Python's
// urlsplit, unquote and str.strip, so that both take the same URIs, read them alike and
// refuse the same ones with the same reason (tests/webapp/test_webapp_codes.py feeds both the
// same corpus). Tolerated as the agent tolerates them: lower-case, padded, spaced or
// dashed secrets, a label with or without the issuer prefix, an issuer parameter that
// differs from the prefix (the parameter wins), "+" or %20 for spaces, algorithm names
// such as "sha1" or "HmacSHA256", parameter names in any case, unknown parameters.
// Refused as the agent refuses them: %-escapes in the label or in a parameter read
// that are not UTF-8 text (they would become U+FFFD without a word).

import { base32Decode, base32Encode } from "./protocol/bytes.js";
import { unwrap } from "./protocol/uri.js";

export class OtpError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "OtpError";
    this.code = code; // "invalid_account", "malformed", "unsupported_version" (report.py)
  }
}

const invalid = (reason) => new OtpError("invalid_account", reason);

const DIGITS = [6, 7, 8];
const MAX_PERIOD = 3600;
const MAX_SECRET_BYTES = 1024;
const MAX_LABEL_CHARS = 256;
const MAX_URI_CHARS = 4096;
const ALGORITHMS = ["SHA1", "SHA256", "SHA512"];

// -- Python's string rules, where the agent's reader leans on them ----------------------

// What Python's str.isspace() (and so str.strip() and the regex \s) counts as white
// space; JavaScript's \s differs (it has U+FEFF, lacks U+001C-U+001F and U+0085).
const SPACE = "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const EDGES = new RegExp(`^[${SPACE}]+|[${SPACE}]+$`, "gu");
const SPACE_OR_DASH = new RegExp(`[${SPACE}-]`, "gu");

export const strip = (text) => text.replace(EDGES, "");
export const chars = (text) => [...text].length; // Python's len(): code points

// Characters Python's str.isprintable() refuses (the space aside).
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}]|(?! )\p{Zs}/u;

// Python's repr() of a string, which the agent's messages quote values with.
export function repr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = "";
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (ch === quote || ch === "\\") out += `\\${ch}`;
    else if (ch === "\t") out += "\\t";
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (!UNPRINTABLE.test(ch)) out += ch;
    else if (code < 0x100) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else if (code < 0x10000) out += `\\u${code.toString(16).padStart(4, "0")}`;
    else out += `\\U${code.toString(16).padStart(8, "0")}`;
  }
  return quote + out + quote;
}

const utf8Lenient = new TextDecoder("utf-8"); // errors become U+FFFD, as errors="replace"
const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }); // errors="strict"

// urllib.parse.unquote: each run of ASCII characters is percent-decoded to bytes and
// read as UTF-8; other characters stay as they are; a "%" without two hex digits stays.
// `strict`: bytes that are not UTF-8 throw (a TypeError), as errors="strict" raises.
export function unquote(text, strict = false) {
  if (!text.includes("%")) return text;
  return text.replace(/[\x00-\x7f]+/g, (run) => {
    const bytes = [];
    const [first, ...rest] = run.split("%");
    for (const ch of first) bytes.push(ch.charCodeAt(0));
    for (const item of rest) {
      const escaped = /^[0-9a-fA-F]{2}/.test(item);
      if (escaped) bytes.push(parseInt(item.slice(0, 2), 16));
      for (const ch of escaped ? item.slice(2) : `%${item}`) bytes.push(ch.charCodeAt(0));
    }
    return (strict ? utf8Strict : utf8Lenient).decode(new Uint8Array(bytes));
  });
}

const SCHEME_CHARS = /^[A-Za-z0-9+.-]*$/;
const C0_OR_SPACE = /^[\x00-\x20]+/;

// urllib.parse.urlsplit (Python 3.11): {scheme, netloc, path, query, fragment}; throws
// where it raises ValueError (brackets of an IPv6 host, a netloc that NFKC changes into
// one with URL delimiters).
function urlsplit(text) {
  let url = text.replace(C0_OR_SPACE, "").replace(/[\t\r\n]/g, "");
  let scheme = "";
  let netloc = "";
  let query = "";
  let fragment = "";
  const colon = url.indexOf(":");
  if (colon > 0 && /^[A-Za-z]/.test(url) && SCHEME_CHARS.test(url.slice(0, colon))) {
    scheme = url.slice(0, colon).toLowerCase();
    url = url.slice(colon + 1);
  }
  if (url.startsWith("//")) {
    const ends = ["/", "?", "#"].map((c) => url.indexOf(c, 2)).filter((i) => i >= 0);
    const end = ends.length ? Math.min(...ends) : url.length;
    netloc = url.slice(2, end);
    url = url.slice(end);
    if (netloc.includes("[") !== netloc.includes("]")) throw new Error("Invalid IPv6 URL");
    if (netloc.includes("[")) checkBracketedHost(netloc.split("[")[1].split("]")[0]);
  }
  if (url.includes("#")) [url, fragment] = [url.slice(0, url.indexOf("#")), url.slice(url.indexOf("#") + 1)];
  if (url.includes("?")) [url, query] = [url.slice(0, url.indexOf("?")), url.slice(url.indexOf("?") + 1)];
  checkNetloc(netloc);
  return { scheme, netloc, path: url, query, fragment };
}

function checkBracketedHost(host) {
  if (host.startsWith("v")) {
    if (!/^v[a-fA-F0-9]+\.[^\n]+$/.test(host)) throw new Error("IPvFuture address is invalid");
    return;
  }
  // ipaddress.ip_address: an IPv6 address (an IPv4 one is refused in brackets), with an
  // optional %scope; the URL parser's IPv6 reader checks the address.
  const at = host.indexOf("%");
  const [address, scope] = at < 0 ? [host, null] : [host.slice(0, at), host.slice(at + 1)];
  if (scope !== null && (!scope || scope.includes("%"))) throw new Error("Invalid IPv6 address");
  try {
    new URL(`http://[${address}]/`);
  } catch {
    throw new Error("not an IPv6 address");
  }
}

function checkNetloc(netloc) {
  if (!netloc || /^[\x00-\x7f]*$/.test(netloc)) return;
  const n = netloc.replace(/[@:#?]/g, "");
  const normal = n.normalize("NFKC");
  if (n !== normal && /[/?#@:]/.test(normal)) throw new Error("netloc contains invalid characters under NFKC");
}

// -- the account rules (accounts_model.py) ----------------------------------------------

// A base32 secret as people and apps write it: any case, spaces and dashes between
// groups, "=" padding or none. Leftover bits are dropped, as Python's b32decode does.
export function decodeSecret(text) {
  const cleaned = text.replace(SPACE_OR_DASH, "").toUpperCase().replace(/=+$/, "");
  if (!cleaned) throw invalid("the secret is empty");
  if (!/^[A-Z2-7]+$/.test(cleaned)) throw invalid("the secret is not base32 (letters A-Z and digits 2-7)");
  if ([1, 3, 6].includes(cleaned.length % 8)) throw invalid("the secret has an impossible base32 length (truncated?)");
  return base32Decode(cleaned);
}

// Python's repr() of a value read from an export's JSON, for a refusal that quotes it as
// the agent's does (a digits field of "6" is refused there: it takes whole numbers only).
export function pyValue(value) {
  if (typeof value === "string") return repr(value);
  if (typeof value === "bigint" || typeof value === "number") return String(value);
  if (value === null || value === undefined) return "None";
  if (value === true || value === false) return value ? "True" : "False";
  if (Array.isArray(value)) return `[${value.map(pyValue).join(", ")}]`;
  return `{${Object.entries(value).map(([k, v]) => `${repr(k)}: ${pyValue(v)}`).join(", ")}}`;
}

// "sha1", "SHA-256", "HmacSHA512" and the like to SHA1 / SHA256 / SHA512.
export function normalizeAlgorithm(text) {
  let name = strip(text).toUpperCase().replaceAll("-", "").replaceAll("_", "");
  if (name.startsWith("HMAC")) name = name.slice(4);
  if (ALGORITHMS.includes(name)) return name;
  throw invalid(`unsupported algorithm ${repr(text)} (SHA1, SHA256 or SHA512)`);
}

// The checks of OtpAccount.__post_init__, in its order. Integers are BigInts until they
// pass (a URI may hold any number of digits).
function checkAccount(a) {
  if (a.kind !== "totp" && a.kind !== "hotp") throw invalid(`unsupported token type ${repr(String(a.kind))} (totp or hotp)`);
  if (!ALGORITHMS.includes(a.algorithm)) throw invalid(`unsupported algorithm ${repr(String(a.algorithm))}`);
  if (!a.secret.length) throw invalid("the secret is empty");
  if (a.secret.length > MAX_SECRET_BYTES) throw invalid(`the secret is longer than ${MAX_SECRET_BYTES} bytes`);
  // Whole numbers only (BigInts by now): an export's JSON may hold "6", 6.5 or null.
  const whole = (v) => typeof v === "bigint";
  if (!whole(a.digits) || !DIGITS.includes(Number(a.digits)))
    throw invalid(`unsupported number of digits ${pyValue(a.digits)} (6, 7 or 8)`);
  if (!whole(a.period) || a.period < 1n || a.period > BigInt(MAX_PERIOD))
    throw invalid(`the period must be 1..${MAX_PERIOD} seconds, not ${pyValue(a.period)}`);
  if (!whole(a.counter) || a.counter < 0n || a.counter >= 2n ** 63n)
    throw invalid(`the counter must be 0..2^63-1, not ${pyValue(a.counter)}`);
  for (const [label, value] of [["name", a.name], ["issuer", a.issuer]])
    if (chars(value) > MAX_LABEL_CHARS) throw invalid(`the ${label} must be text of at most ${MAX_LABEL_CHARS} characters`);
  if (!a.name && !a.issuer) throw invalid("the account has neither a name nor an issuer");
  return { ...a, digits: Number(a.digits), period: Number(a.period), counter: a.counter };
}

// {secret (bytes), name, issuer, kind, algorithm, digits, period, counter (BigInt)}: an
// account as the agent's OtpAccount holds it; throws OtpError where that refuses.
// Numbers that are not whole (from an export's JSON) stay as they are, to be refused.
export function account({ secret, name, issuer = "", kind = "totp", algorithm = "SHA1", digits = 6n, period = 30n, counter = 0n }) {
  const int = (v) => (typeof v === "number" && Number.isInteger(v) ? BigInt(v) : v);
  return checkAccount({ secret, name, issuer, kind, algorithm, digits: int(digits), period: int(period), counter: int(counter) });
}

// How people see an account: "Issuer: name" (or whichever of the two exists).
export const labelOf = ({ issuer, name }) => (issuer && name ? `${issuer}: ${name}` : issuer || name);

// Whether both make the same codes (a duplicate), labels and HOTP counter aside.
export function sameCodes(a, b) {
  if (a.kind !== b.kind || a.algorithm !== b.algorithm || a.digits !== b.digits) return false;
  if (a.secret.length !== b.secret.length || a.secret.some((x, i) => x !== b.secret[i])) return false;
  return a.kind === "hotp" || a.period === b.period;
}

// The agent's accounts_model.secret_problem: a secret under 80 bits is refused where an
// account comes in (RFC 4226 asks for 128; many services hand out 80).
export function secretProblem(secret) {
  if (secret.length < 10) return `secret is ${secret.length * 8} bits; at least 80 are needed`;
  return null;
}

// The agent's store.check_name: what it refuses as an account's name in its list.
export function nameProblem(name) {
  const n = strip(name);
  if (!n || chars(n) > 256 || UNPRINTABLE.test(n)) return "an account name must be 1 to 256 printable characters";
  return null;
}

// -- otpauth:// URIs (importers/otpauth.py) ---------------------------------------------

function query(text) {
  const params = new Map();
  for (const part of text.split("&")) {
    if (!part) continue;
    const eq = part.indexOf("=");
    const [rawKey, value] = eq < 0 ? [part, ""] : [part.slice(0, eq), part.slice(eq + 1)];
    const key = strip(unquote(rawKey)).toLowerCase();
    if (params.has(key)) throw invalid(`parameter ${repr(key)} is given twice`);
    params.set(key, value); // decoded when read (param): an unknown one never is
  }
  return params;
}

// otpauth.py's _text: `raw` percent-decoded; escapes that are not UTF-8 text refused.
function decoded(raw, what) {
  try {
    return unquote(raw, true);
  } catch {
    throw invalid(`the ${what} ${repr(raw)} has %-escapes that are not UTF-8 text`);
  }
}

// The decoded value of parameter `key` ("" when absent), "+" read as a space.
const param = (params, key) => decoded((params.get(key) ?? "").replaceAll("+", " "), key);

function intParam(params, key, fallback) {
  const text = strip(param(params, key));
  if (!text) return BigInt(fallback);
  if (!/^[0-9]+$/.test(text)) throw invalid(`${key} must be a whole number, not ${repr(text)}`);
  return BigInt(text);
}

// [issuer prefix, name] of the URI's path: the prefix ends at the first colon, unless
// the label starts with the issuer parameter and a colon (an issuer with a colon).
// `strict`: %-escapes that are not UTF-8 refused; else (a refusal's label) shown as U+FFFD.
function splitLabel(path, issuerParam, strict = true) {
  const raw = path.startsWith("/") ? path.slice(1) : path;
  const label = strip(strict ? decoded(raw, "label") : unquote(raw));
  if (issuerParam && label.startsWith(`${issuerParam}:`)) return [issuerParam, strip(label.slice(issuerParam.length + 1))];
  const colon = label.indexOf(":");
  if (colon < 0) return ["", label];
  return [strip(label.slice(0, colon)), strip(label.slice(colon + 1))];
}

// One otpauth:// URI as an account; throws OtpError("invalid_account") with the reason.
// A link wrapped across lines is read as the link (protocol/uri.js's unwrap, as otpauth.py).
export function parseOtpauth(input) {
  const text = strip(unwrap(input));
  if (chars(text) > MAX_URI_CHARS) throw invalid(`the URI is longer than ${MAX_URI_CHARS} characters`);
  let parts;
  try {
    parts = urlsplit(text);
  } catch {
    throw invalid("not a well-formed URI");
  }
  if (parts.scheme !== "otpauth") throw invalid("not an otpauth:// URI");
  const kind = parts.netloc.toLowerCase();
  if (kind !== "totp" && kind !== "hotp") throw invalid(`unsupported token type ${repr(kind)} (only totp and hotp)`);
  const params = query(parts.query);
  const issuerParam = strip(param(params, "issuer"));
  const [prefix, name] = splitLabel(parts.path, issuerParam);
  if (!params.has("secret")) throw invalid("the URI has no secret");
  // In the order the agent evaluates them, so that a URI with two faults gets its reason.
  const secret = decodeSecret(param(params, "secret"));
  const algorithm = normalizeAlgorithm(param(params, "algorithm") || "SHA1");
  const digits = intParam(params, "digits", 6);
  const period = intParam(params, "period", 30);
  // The spec requires a counter for HOTP, but some exporters leave out counter=0.
  const counter = intParam(params, "counter", 0);
  return checkAccount({ secret, name, issuer: issuerParam || prefix, kind, algorithm, digits, period, counter });
}

// otpauth.py's describe: a best-effort label for a URI that may be invalid, with which a
// file's refused line is named ("?" when there is none).
export function describeOtpauth(input) {
  let parts;
  try {
    parts = urlsplit(strip(unwrap(input)));
  } catch {
    return "?";
  }
  let issuerParam = "";
  try {
    issuerParam = strip(unquote((query(parts.query).get("issuer") ?? "").replaceAll("+", " ")));
  } catch {
    // a parameter given twice: no issuer to show
  }
  const [prefix, name] = splitLabel(parts.path, issuerParam, false);
  const issuer = issuerParam || prefix;
  return (issuer && name ? `${issuer}: ${name}` : issuer || name) || "?";
}

// -- writing: the agent's otpauth.to_uri ---------------------------------------------------

// Python's urllib.parse.quote(text, safe="@" if keepAt else ""): UTF-8, every byte
// escaped (upper-case hex) but A-Z a-z 0-9 _ . - ~ (and "@" in a label).
// encodeURIComponent also leaves ! ' ( ) * as they are: those are escaped here.
function quote(text, keepAt = false) {
  const out = encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  return keepAt ? out.replaceAll("%40", "@") : out;
}

// The otpauth:// URI of an account (as account() holds it), every parameter spelled
// out and spaces as %20: the bytes `pushauth-agent export` writes for the same account.
export function toOtpauth(a) {
  let label = quote(a.name, true);
  if (a.issuer) label = `${quote(a.issuer, true)}:${label}`;
  else if (a.name.includes(":")) label = `:${label}`; // an empty issuer, so the name's colon is not read as one
  const params = [["secret", base32Encode(a.secret)]];
  if (a.issuer) params.push(["issuer", a.issuer]);
  params.push(["algorithm", a.algorithm], ["digits", String(a.digits)]);
  params.push(a.kind === "totp" ? ["period", String(a.period)] : ["counter", String(a.counter)]);
  return `otpauth://${a.kind}/${label}?${params.map(([k, v]) => `${k}=${quote(v)}`).join("&")}`;
}
