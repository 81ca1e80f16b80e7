// Backups in the Python agent's format (docs/backup-format.md; device_agent/backup.py
// and backup_actions.py): a backup this app writes restores with `pushauth-agent
// restore`, and one the agent wrote restores here. No I/O and no storage: the app's
// shell (app.js) reads its accounts, unseals their secrets and hands them in as plain
// "lines"; it gets lines back to store.
//
// A line is one account in the list, in order:
//   {name, otp: {secret, algorithm, digits, period, label, issuer} (time-based) or
//               {kind: "hotp", secret, algorithm, digits, counter, label, issuer} | null,
//    push: {rp, rp_name, user, label, broker, cid, device_name, added, recovery_seed} | null}
// The push part never holds the account's key (it cannot leave the phone), so a
// restored push account needs a new QR code, unless the service enrolled it as
// recoverable: then `recovery_seed` (32 bytes) lets the new device register a key of
// its own (docs/protocol.md section 16).

import { BACKUP_MAGIC, SealedFileError, seal, sealKey, sealWith, unseal } from "./sealedfile.js";
import { b64urlDecode, b64urlEncode, base32Encode } from "./protocol/bytes.js";
import { OtpError, account, decodeSecret } from "./otp.js";

export const BACKUP_FORMAT = "pushauth-backup/1";
const DOC_FIELDS = ["accounts", "created_at", "device_name", "format", "push_accounts", "settings"];
const PUSH_FIELDS = ["rp", "rp_name", "user", "label", "broker", "cid", "device_name", "added"];
const OTP_FIELDS = ["algorithm", "digits", "issuer", "kind", "name", "period", "secret"];
// As device_agent/passphrase.py: at least 12 characters, and a zxcvbn score of at least
// 3 (an estimate of the guesses an attacker with word lists and common patterns needs)
// with the same hints; zxcvbn-ts with the English and common word lists scores as the
// agent's zxcvbn does. A backup file can be attacked offline: only the passphrase
// stands between a thief of the file and its secrets.
export const MIN_PASSPHRASE_LENGTH = 12;
const MIN_PASSPHRASE_SCORE = 3;
const USER_INPUTS = ["pushauth", "push", "auth", "passphrase"];
const ADVICE = "use four or more random words";

const bad = (message) => new SealedFileError("bad_content", message);
const sameKeys = (obj, keys) => {
  const have = Object.keys(obj).sort();
  const want = [...keys].sort();
  return have.length === want.length && have.every((k, i) => k === want[i]);
};
const isObject = (v) => typeof v === "object" && v !== null && !Array.isArray(v);

let rater = null;

// The rater loads on first use: its word lists are most of the app's bytes.
function zxcvbn() {
  rater ??= import("../vendor/zxcvbn.js").then(
    ({ ZxcvbnFactory, common, en }) =>
      new ZxcvbnFactory({
        dictionary: { ...common.dictionary, ...en.dictionary },
        graphs: common.adjacencyGraphs,
        translations: en.translations,
      }),
  );
  return rater;
}

// Why a passphrase will not do, or null. Counted in code points, as Python counts.
export async function passphraseProblem(passphrase) {
  const chars = [...passphrase];
  if (chars.length < MIN_PASSPHRASE_LENGTH)
    return `The passphrase is too short (${chars.length} characters, at least ${MIN_PASSPHRASE_LENGTH}): ${ADVICE}.`;
  const result = await (await zxcvbn()).check(chars.slice(0, 100).join(""), USER_INPUTS);
  if (result.score >= MIN_PASSPHRASE_SCORE) return null;
  const why = result.feedback.warning || "it follows a pattern that guessing programs try early";
  return `The passphrase is too easy to guess (${why.replace(/\.$/, "")}): ${ADVICE}.`;
}

// -- writing -------------------------------------------------------------------------

// The backup's JSON document for `lines`, as device_agent/backup_actions.py backup_of
// builds it (accounts, push_accounts and a layout naming each line's entries).
export function backupDocument(lines, deviceName, createdAt = Math.floor(Date.now() / 1000)) {
  const accounts = [];
  const pushAccounts = [];
  const layout = [];
  for (const line of lines) {
    const entry = { name: line.name, otp: null, push: null };
    if (line.otp) {
      entry.otp = accounts.length;
      const { kind = "totp", secret, algorithm, digits, period, counter, label, issuer } = line.otp;
      const common = { kind, name: label, issuer, secret, algorithm, digits };
      accounts.push(kind === "hotp" ? { ...common, counter } : { ...common, period });
    }
    if (line.push) {
      entry.push = pushAccounts.length;
      const fields = Object.fromEntries(PUSH_FIELDS.map((k) => [k, line.push[k]]));
      fields.recovery_seed = line.push.recovery_seed ? b64urlEncode(line.push.recovery_seed) : null;
      pushAccounts.push(fields);
    }
    layout.push(entry);
  }
  return {
    format: BACKUP_FORMAT,
    created_at: createdAt,
    device_name: deviceName,
    accounts,
    push_accounts: pushAccounts,
    settings: { layout, agent: {} },
  };
}

// Compact, as json.dumps(separators=(",", ":")) writes it; JSON.stringify never writes
// NaN or Infinity (it writes null), and the document holds none.
const payloadOf = (doc) => new TextEncoder().encode(JSON.stringify(doc));

export async function sealBackup(doc, passphrase, options = {}) {
  return seal(BACKUP_MAGIC, passphrase, payloadOf(doc), options);
}

// The same under a key derived before (sealedfile.js sealKey): automatic backups.
export const backupKey = (passphrase, options = {}) => sealKey(passphrase, options);
export const sealBackupWith = (doc, key) => sealWith(BACKUP_MAGIC, key, payloadOf(doc));

// -- reading ---------------------------------------------------------------------------

function otpFromJson(raw) {
  if (!isObject(raw)) throw bad("the backup holds an invalid account: an account must be a JSON object");
  const wanted = raw.kind === "hotp" ? OTP_FIELDS.map((f) => (f === "period" ? "counter" : f)) : OTP_FIELDS;
  if (!sameKeys(raw, wanted)) throw bad("the backup holds an invalid account: unexpected fields");
  const { kind, name, issuer, secret, algorithm, digits } = raw;
  const hotp = kind === "hotp";
  const typed =
    ["totp", "hotp"].includes(kind) &&
    [name, issuer, secret, algorithm].every((v) => typeof v === "string") &&
    [digits, hotp ? raw.counter : raw.period].every(Number.isSafeInteger);
  // Then the rules every account meets (js/otp.js, as OtpAccount.from_json applies
  // them): the secret read as the agent reads it (case, white space, dashes and padding
  // do not matter; a length no whole number of bytes has does), the algorithm spelled
  // exactly, digits, period or counter, labels.
  let checked = null;
  try {
    if (typed)
      checked = account({ secret: decodeSecret(secret), name, issuer, kind, algorithm, digits, period: hotp ? 30 : raw.period, counter: hotp ? raw.counter : 0 });
  } catch (exc) {
    if (!(exc instanceof OtpError)) throw exc;
  }
  if (!checked) throw bad(`the backup holds an invalid account (${typeof name === "string" ? name : "?"})`);
  return { ...raw, secret: base32Encode(checked.secret) };
}

function pushFromJson(name, raw) {
  const damaged = (why) => bad(`the backup's push account '${name}' is damaged (${why})`);
  if (!isObject(raw)) throw damaged("not an object");
  for (const k of PUSH_FIELDS) {
    const v = raw[k];
    if (k === "added" ? !Number.isSafeInteger(v) : typeof v !== "string") throw damaged(`${k} is missing or invalid`);
  }
  let recoverySeed = null;
  if (raw.recovery_seed) {
    try {
      recoverySeed = b64urlDecode(raw.recovery_seed);
    } catch {
      throw damaged("its recovery key is not base64url");
    }
    if (recoverySeed.length !== 32) throw damaged("a recovery key of the wrong size");
  }
  return { ...Object.fromEntries(PUSH_FIELDS.map((k) => [k, raw[k]])), recovery_seed: recoverySeed };
}

// The lines of a backup document, checked as device_agent/backup.py load_backup and
// backup_actions.py restore check them.
export function linesOf(doc) {
  if (!isObject(doc) || doc.format !== BACKUP_FORMAT)
    throw new SealedFileError(
      "unsupported_version",
      `the backup content has format ${JSON.stringify(isObject(doc) ? (doc.format ?? null) : null)}, expected '${BACKUP_FORMAT}'`,
    );
  if (!sameKeys(doc, DOC_FIELDS)) throw bad("the backup content has unexpected fields");
  if (!Array.isArray(doc.accounts)) throw bad("the backup accounts are not a list");
  const accounts = doc.accounts.map(otpFromJson);
  if (!Array.isArray(doc.push_accounts) || !doc.push_accounts.every(isObject))
    throw bad("the backup's push accounts are not a list of objects");
  if (!isObject(doc.settings)) throw bad("the backup's settings are not an object");
  if (!Number.isSafeInteger(doc.created_at) || typeof doc.device_name !== "string")
    throw bad("the backup's created_at or device_name is invalid");
  const layout = doc.settings.layout;
  const damaged = bad("the backup's account list is damaged (a newer or foreign pushauth wrote it?)");
  if (!Array.isArray(layout)) throw damaged;
  const lines = [];
  for (const entry of layout) {
    if (!isObject(entry) || typeof entry.name !== "string") throw damaged;
    for (const [key, items] of [["otp", accounts], ["push", doc.push_accounts]]) {
      const i = entry[key];
      if (i !== null && i !== undefined && !(Number.isInteger(i) && i >= 0 && i < items.length)) throw damaged;
    }
    const hasOtp = entry.otp !== null && entry.otp !== undefined;
    const hasPush = entry.push !== null && entry.push !== undefined;
    if (!hasOtp && !hasPush) throw damaged;
    const otp = hasOtp ? accounts[entry.otp] : null;
    const push = hasPush ? pushFromJson(entry.name, doc.push_accounts[entry.push]) : null;
    const common = otp && { secret: otp.secret, algorithm: otp.algorithm, digits: otp.digits, label: otp.name, issuer: otp.issuer };
    lines.push({
      name: entry.name,
      otp: otp && (otp.kind === "hotp" ? { kind: "hotp", ...common, counter: otp.counter } : { ...common, period: otp.period }),
      push,
    });
  }
  if (new Set(layout.map((e) => e.name)).size !== layout.length)
    throw bad("the backup's account list is damaged (two accounts with one name)");
  return { lines, deviceName: doc.device_name, createdAt: doc.created_at };
}

export async function openBackup(data, passphrase, options = {}) {
  const payload = await unseal(BACKUP_MAGIC, "backup", data, passphrase, options);
  let doc;
  try {
    doc = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(payload));
  } catch {
    throw bad("the backup content is not valid JSON");
  }
  return linesOf(doc);
}
