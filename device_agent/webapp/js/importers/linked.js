// Exports that hold each account as an otpauth:// link, or as its parts, in a JSON or
// CSV file of their own (device_agent/importers/linked.py): Bitwarden (JSON and CSV, the
// login's "totp" field), Proton Authenticator (JSON) and FreeOTP+ (JSON). Each entry is
// read as the otpauth:// reader reads a link (a Steam one, steam://, refused by its
// type); a bare base32 secret, as Bitwarden allows, becomes a 30 s, 6-digit TOTP account
// named after its item.

import { account, collect, fromLink, get, isObject, labelOf, malformed, refusal, text, truthy } from "./entries.js";
import { strip } from "../otp.js";

const BITWARDEN_CSV_COLUMNS = ["name", "login_totp"];

export const looksLikeBitwarden = (doc) => isObject(doc) && Array.isArray(doc.items) && Object.hasOwn(doc, "encrypted");
export const looksLikeProton = (doc) =>
  isObject(doc) && Array.isArray(doc.entries) && doc.entries.every((e) => isObject(e) && Object.hasOwn(e, "content"));
export const looksLikeFreeOtpPlus = (doc) => isObject(doc) && Array.isArray(doc.tokens) && Object.hasOwn(doc, "tokenOrder");

export function looksLikeBitwardenCsv(source) {
  const header = strip(source.split("\n")[0]).split(",");
  return BITWARDEN_CSV_COLUMNS.every((c) => header.includes(c));
}

function item(name, totp, fallback) {
  const label = name || fallback;
  if (typeof totp === "string" && !totp.includes("://")) return account(label, { secret: totp, name: "", issuer: name || fallback, kind: "totp" });
  return fromLink(label, totp);
}

// The items of a Bitwarden JSON export that have a TOTP; an encrypted export is refused
// whole (its key is the Bitwarden account's, which this app never sees).
export function parseBitwarden(doc) {
  if (doc.encrypted !== false) throw malformed("Bitwarden", "it is encrypted: export it from Bitwarden as .json or .csv, unencrypted");
  const results = [];
  doc.items.forEach((it, i) => {
    const login = isObject(it) ? it.login : null;
    const totp = isObject(login) ? get(login, "totp", null) : null;
    if (truthy(totp)) results.push(item(text(it.name), totp, `item ${i + 1}`));
  });
  return collect(results);
}

// Python's csv.reader (the excel dialect, not strict): records of fields; a quoted field
// may hold commas, doubled quotes and line breaks; an empty line is no record.
function csvRecords(source) {
  const records = [];
  let row = [];
  let field = "";
  let quoted = false; // inside quotes
  let touched = false; // the record has begun (an empty line has not)
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (quoted) {
      if (c !== '"') field += c;
      else if (source[i + 1] === '"') (field += '"'), i++;
      else quoted = false;
    } else if (c === '"' && field === "") {
      quoted = touched = true;
    } else if (c === ",") {
      row.push(field);
      field = "";
      touched = true;
    } else if (c === "\r" || c === "\n") {
      if (c === "\r" && source[i + 1] === "\n") i++;
      if (touched || field) records.push([...row, field]);
      row = [];
      field = "";
      touched = false;
    } else {
      field += c;
      touched = true;
    }
  }
  if (touched || field) records.push([...row, field]);
  return records;
}

export function parseBitwardenCsv(source) {
  const [header = [], ...rows] = csvRecords(source);
  const results = [];
  rows.forEach((values, i) => {
    const row = {}; // csv.DictReader: a later column of the same name wins; a missing one is None
    header.forEach((key, k) => (row[key] = values[k] ?? null));
    const totp = strip(row.login_totp ?? "");
    if (totp) results.push(item(text(row.name), totp, `row ${i + 2}`));
  });
  return collect(results);
}

export function parseProton(doc) {
  return collect(
    doc.entries.map((e, i) => {
      const content = isObject(e.content) ? e.content : {};
      return fromLink(text(content.name) || `entry ${i + 1}`, get(content, "uri", null));
    }),
  );
}

// FreeOTP+ writes the secret as Java's signed bytes (-128..127).
function freeOtpSecret(value) {
  if (!Array.isArray(value) || !value.every((b) => Number.isInteger(b) && b >= -128 && b <= 127)) return null;
  return Uint8Array.from(value, (b) => b & 0xff);
}

// FreeOTP(+) keeps an HOTP token's last used counter (a link with counter=50 is stored as
// 49, and its next code is made with 50); an account here keeps the next one, so that
// its first code is the one FreeOTP+ would show next.
const freeOtpNext = (counter) => (Number.isInteger(counter) ? counter + 1 : counter);

export function parseFreeOtpPlus(doc) {
  return collect(
    doc.tokens.map((token, i) => {
      if (!isObject(token)) return refusal(`token ${i + 1}`, "not a JSON object");
      const issuer = text(token.issuerExt);
      const name = text(token.label);
      return account(labelOf(issuer, name, `token ${i + 1}`), {
        secret: freeOtpSecret(token.secret),
        name,
        issuer,
        kind: text(token.type) || "totp",
        algorithm: get(token, "algo", null),
        digits: get(token, "digits", 6),
        period: get(token, "period", 30),
        counter: freeOtpNext(get(token, "counter", 0)),
      });
    }),
  );
}
