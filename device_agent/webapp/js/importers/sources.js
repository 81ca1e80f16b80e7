// Recognize a file chosen on the Add account screen and hand it to the right reader
// (device_agent/importers/sources.py, rule for rule): an Aegis vault export (JSON), a
// 2FAS backup (.2fas, plain or encrypted), an andOTP backup (JSON, or encrypted), a
// Bitwarden export (JSON or CSV), a FreeOTP+ or Proton Authenticator export (JSON); or
// text with one URI per line, each an otpauth:// URI or an otpauth-migration:// URI (a
// QR code of Google Authenticator's export), blank lines and # comments skipped, any
// other line refused by its number. (The agent also reads screenshots of QR codes; here
// the camera scans them.)
//
// parseFile(bytes, password) -> {accounts, refused: [{label, reason}], notes}; a problem
// with the whole file throws OtpError with report.py's code: "unrecognized",
// "malformed", "unsupported_version", "password_required", "wrong_password".

import { OtpError, describeOtpauth, parseOtpauth, strip } from "../otp.js";
import { parseMigration } from "../migration.js";
import * as aegis from "./aegis.js";
import * as andotp from "./andotp.js";
import * as linked from "./linked.js";
import * as twofas from "./twofas.js";
import { jsonOf } from "./entries.js";

export const MAX_SOURCE_BYTES = 16 * 1024 ** 2;
const SUPPORTED = "Aegis, 2FAS, andOTP, Bitwarden, FreeOTP+ or Proton Authenticator exports, or otpauth:// or otpauth-migration:// text";

const unrecognized = (why) => new OtpError("unrecognized", why);
const utf8Sig = new TextDecoder("utf-8", { fatal: true }); // strict, a leading BOM dropped: utf-8-sig
// What Python's str.splitlines() ends a line at.
const LINE_BREAK = /\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]/;
// links.scheme_of: ASCII white space only around it.
const schemeOf = (link) => link.replace(/^[ \t\n\r\f\v]+|[ \t\n\r\f\v]+$/g, "").split(":")[0].toLowerCase();
const TAKES = ["otpauth", "otpauth-migration"];

export async function parseFile(data, password = null) {
  if (data.length > MAX_SOURCE_BYTES) throw new OtpError("malformed", "the file is too large for an account export");
  let source;
  try {
    source = utf8Sig.decode(data);
  } catch {
    if (andotp.mayBeEncrypted(data)) return andotp.parse(await andotp.decrypt(data, password));
    throw unrecognized(`not a supported export (${SUPPORTED})`);
  }
  if (/^[{[]/.test(strip(source))) return parseJson(source, password);
  if (linked.looksLikeBitwardenCsv(source)) return linked.parseBitwardenCsv(source);
  const uris = [];
  source.split(LINE_BREAK).forEach((line, i) => {
    const trimmed = strip(line);
    if (trimmed && !trimmed.startsWith("#")) uris.push([`line ${i + 1}`, trimmed]);
  });
  if (!uris.some(([, t]) => TAKES.includes(schemeOf(t))))
    throw unrecognized("no otpauth:// or otpauth-migration:// URI found (nor an Aegis .json vault)");
  return parseUris(uris);
}

async function parseJson(source, password) {
  const doc = jsonOf(source);
  if (doc === null || aegis.looksLike(doc)) return aegis.parse(doc, password); // says what is wrong with a JSON file that is none
  if (twofas.looksLike(doc)) return twofas.parse(doc, password);
  if (linked.looksLikeBitwarden(doc)) return linked.parseBitwarden(doc);
  if (linked.looksLikeProton(doc)) return linked.parseProton(doc);
  if (linked.looksLikeFreeOtpPlus(doc)) return linked.parseFreeOtpPlus(doc);
  if (andotp.looksLike(doc)) return andotp.parse(doc);
  throw unrecognized(`a JSON file of no export this reads (${SUPPORTED})`);
}

function parseUris(uris) {
  const parsed = { accounts: [], refused: [], notes: [] };
  const batches = [];
  for (const [where, text] of uris) {
    const scheme = schemeOf(text);
    try {
      if (scheme === "otpauth") {
        parsed.accounts.push(parseOtpauth(text));
      } else if (scheme === "otpauth-migration") {
        const batch = parseMigration(text);
        batches.push(batch);
        parsed.accounts.push(...batch.accounts);
        parsed.refused.push(...batch.refused);
      } else {
        parsed.refused.push({ label: where, reason: "not an otpauth:// or otpauth-migration:// URI" });
      }
    } catch (exc) {
      if (!(exc instanceof OtpError)) throw exc;
      const what = scheme === "otpauth" ? describeOtpauth(text) : "Google Authenticator export";
      parsed.refused.push({ label: `${where} (${what})`, reason: exc.message });
    }
  }
  parsed.notes.push(...missingCodes(batches));
  return parsed;
}

// migration.missing_codes: the QR codes of each export that were not given, by number.
function missingCodes(batches) {
  const seen = new Map();
  for (const b of batches) {
    if (b.batchSize <= 1) continue;
    if (!seen.has(b.batchId)) seen.set(b.batchId, [b.batchSize, new Set()]);
    seen.get(b.batchId)[1].add(b.batchIndex);
  }
  const notes = [];
  for (const [size, indices] of seen.values()) {
    const missing = [];
    for (let i = 0; i < size; i++) if (!indices.has(i)) missing.push(String(i + 1));
    if (missing.length)
      notes.push(`Google Authenticator export: QR code ${missing.join(", ")} of ${size} was not given, so its accounts were not imported; scan it too`);
  }
  return notes;
}
