// The broker's device HTTP requests (docs/http-api.md), as device_agent/broker_http.py
// makes them: a recovery after a restore, and the encrypted-backup store. Each request
// is signed by a device-held key over its time; the broker accepts it once and within
// minutes of its clock. The broker answers them from any origin (broker/cors.py).
//
// Recovery (docs/protocol.md section 16): the backup's recovery key of the old device's
// credential signs for a new key made on this phone, which signs too (proof of
// possession), and the broker registers the new credential for the same service, user
// and account, using the old recovery key up. The new credential gets a recovery key of
// its own.

import { newKeyPair, newRecoveryKey, keyFromSeed, publicKeyOfSeed, sign } from "./keys.js";
import { b64urlEncode } from "./protocol/bytes.js";
import { backupBytes, recoverBytes, recoveryKeyBytes } from "./protocol/signing.js";
import { insecureTransport } from "./protocol/uri.js";

const WHY = {
  recovery_key_used: "its recovery key was used already (a recovery key works once)",
  credential_revoked: "the old device was removed at the service",
  recovery_refused: "the server does not accept this recovery key",
  rate_limited: "the server is busy; try again in a minute",
  too_many_credentials: "the service allows no more devices for this account: remove one you no longer use on its security page, but not the device this backup came from (its key is what recovers the account), then restore again",
};

// A request with no answer in this time fails (the WebSocket's replies have their own
// limit, connection.js): fetch() has none, and a connection that stalls on a flaky
// network left "Save to the server" or a restore waiting for good, its buttons disabled.
// Generous: a backup is sent whole, on whatever network the phone has.
export const REQUEST_TIMEOUT_MS = 30000;

// fetch() that gives up after `REQUEST_TIMEOUT_MS`, the answer's body included (the
// timer stays on: aborting a request already read does nothing); a failure is a
// BrokerError that says which. A timer of the page (not AbortSignal.timeout), so that a
// test's clock drives it.
async function timedFetch(url, init) {
  const abort = new AbortController();
  setTimeout(
    () =>
      abort.abort(
        new BrokerError("timeout", `the server did not answer in ${REQUEST_TIMEOUT_MS / 1000} s (check the connection and try again)`),
      ),
    REQUEST_TIMEOUT_MS,
  );
  try {
    return await fetch(url, { ...init, signal: abort.signal, credentials: "omit", cache: "no-store" });
  } catch (exc) {
    if (exc instanceof BrokerError) throw exc;
    throw new BrokerError("unreachable", `the server could not be reached (${exc.message})`);
  }
}

export class BrokerError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "BrokerError";
    this.code = code;
  }
}

// The broker's HTTP origin from its device WebSocket URL or an HTTP(S) address, its
// host and port as written (as device_agent/broker_http.py http_base makes it: a broker
// copy's keys are derived from this text, so both must read an address alike).
export function httpBase(address) {
  const m = /^(wss?|https?):\/\/([^/?#@]+)(?:[/?#]|$)/i.exec(address.trim());
  let host = null;
  try {
    host = m && new URL(`http://${m[2]}`).hostname;
  } catch {
    host = null;
  }
  if (!host) throw new BrokerError("bad_address", `not a server address: ${address} (wss://, ws://, https:// or http://)`);
  const secure = ["wss", "https"].includes(m[1].toLowerCase());
  const insecure = secure ? null : insecureTransport(`ws://${m[2]}`);
  if (insecure) throw new BrokerError("insecure", insecure);
  return `${secure ? "https" : "http"}://${m[2]}`;
}

// `push` is a backup line's push part (js/backup.js) with its recovery seed. Returns
// {cid, user, keyPair, recovery} of the new credential; throws BrokerError.
export async function recover(push, deviceName) {
  const keyPair = await newKeyPair();
  const recovery = await newRecoveryKey();
  const ts = Date.now();
  const message = recoverBytes(push.rp, push.cid, keyPair.publicKey, deviceName, recovery.publicKey, ts);
  const body = {
    cid: push.cid,
    pk: b64urlEncode(keyPair.publicKey),
    name: deviceName,
    recovery_pk: b64urlEncode(recovery.publicKey),
    ts,
    recovery_sig: b64urlEncode(await sign(await keyFromSeed(push.recovery_seed), message)),
    sig: b64urlEncode(await sign(keyPair.privateKey, message)),
  };
  const response = await postJson(`${httpBase(push.broker)}/v1/recoveries`, body);
  if (response.status !== 201) {
    const { code } = await refusal(response, "refused the recovery");
    throw new BrokerError(code, WHY[code] ?? `the server refused the recovery (${code})`);
  }
  const answer = await response.json().catch(() => null);
  const fields = ["id", "rp", "user"];
  if (!answer || !fields.every((k) => typeof answer[k] === "string" && answer[k]))
    throw new BrokerError("malformed", "the server's answer to the recovery is malformed");
  // The server must have recovered the account at the service, and for the user, the
  // backup names: a server does not move an account (as the Python agent checks too).
  if (answer.rp !== push.rp)
    throw new BrokerError("wrong_rp", `the server recovered the account at another service (${answer.rp})`);
  if (answer.user !== push.user)
    throw new BrokerError("wrong_user", `the server recovered the account for another user (${answer.user})`);
  return { cid: answer.id, user: answer.user, keyPair, recovery };
}

function postJson(url, body) {
  return timedFetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

// Name a new recovery key for credential `cid` (signed by its key), replacing the one
// named before or used by a recovery: true when the broker took it, false when the
// service did not enroll the credential as recoverable.
// `ts`: when to date it (default this clock; after a recovery, signing.js rotationTs).
// A refusal as not newer than what the broker holds (409 conflict: a recovery from the
// credential, or its last new key, dated by a clock ahead of this one) carries that
// holding's ts as `newerThan` (docs/http-api.md, RP API 1.6), as device_agent/broker_http.py
// reads it; undefined from a broker that does not say it.
export async function setRecoveryKey(broker, cid, privateKey, recoveryPk, ts = Date.now()) {
  const sig = await sign(privateKey, recoveryKeyBytes(cid, recoveryPk, ts));
  const url = `${httpBase(broker)}/v1/credentials/${encodeURIComponent(cid)}/recovery-key`;
  const response = await postJson(url, { recovery_pk: b64urlEncode(recoveryPk), ts, sig: b64urlEncode(sig) });
  if (response.status === 204) return true;
  const failure = await refusal(response, "did not take the new recovery key");
  if (failure.code === "not_recoverable") return false;
  const newerThan = failure.problem?.newer_than;
  if (failure.code === "conflict" && Number.isSafeInteger(newerThan) && newerThan >= 0) failure.newerThan = newerThan;
  throw failure;
}

// -- the encrypted-backup store -----------------------------------------------------------

export const DEFAULT_BACKUP_NAME = "default";

async function blobRequest(broker, seed, op, body = new Uint8Array(0)) {
  const blobId = b64urlEncode(await publicKeyOfSeed(seed));
  const ts = Date.now();
  const bodyHash = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
  const sig = await sign(await keyFromSeed(seed), backupBytes(op, blobId, ts, bodyHash));
  const headers = { "X-Pushauth-Time": String(ts), "X-Pushauth-Signature": b64urlEncode(sig) };
  if (op === "put") headers["Content-Type"] = "application/octet-stream";
  return timedFetch(`${httpBase(broker)}/v1/backups/${encodeURIComponent(blobId)}`, {
    method: op.toUpperCase(),
    headers,
    body: op === "put" ? body : undefined,
  });
}

async function refusal(response, what) {
  const answer = await response.json().catch(() => null);
  const code = typeof answer?.code === "string" ? answer.code : `http_${response.status}`;
  const detail = typeof answer?.detail === "string" ? answer.detail : code;
  return Object.assign(new BrokerError(code, `the server ${what}: ${detail}`), { problem: answer });
}

export async function putBlob(broker, seed, blob) {
  const response = await blobRequest(broker, seed, "put", blob);
  if (response.status !== 204) throw await refusal(response, "did not store the backup");
}

// Delete the blob of `seed`: true if it was there, false if there was none.
export async function deleteBlob(broker, seed) {
  const response = await blobRequest(broker, seed, "delete");
  if (response.status === 404) return false;
  if (response.status !== 204) throw await refusal(response, "did not delete the backup");
  return true;
}

export async function getBlob(broker, seed) {
  const response = await blobRequest(broker, seed, "get");
  if (response.status === 404)
    throw new BrokerError(
      "not_found",
      "there is no backup on this server for this passphrase and backup code (check both, and the server's address)",
    );
  if (response.status !== 200) throw await refusal(response, "refused to give the backup");
  return new Uint8Array(await response.arrayBuffer());
}
