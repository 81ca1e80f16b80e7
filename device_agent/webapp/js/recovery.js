// Recovery of a restored account (docs/protocol.md section 16; docs/http-api.md
// POST /v1/recoveries): the backup's recovery key of the old device's credential signs
// for a new key made on this phone, which signs too (proof of possession), and the
// broker registers the new credential for the same service, user and account, using
// the old recovery key up. The new credential gets a recovery key of its own.
// As device_agent/broker_http.py recover does it.

import { newKeyPair, newRecoveryKey, keyFromSeed, sign } from "./keys.js";
import { b64urlEncode } from "./protocol/bytes.js";
import { recoverBytes } from "./protocol/signing.js";
import { insecureTransport } from "./protocol/uri.js";

const WHY = {
  recovery_key_used: "its recovery key was used already (a recovery key works once)",
  credential_revoked: "the old device was removed at the service",
  recovery_refused: "the server does not accept this recovery key",
  rate_limited: "the server is busy; try again in a minute",
};

export class RecoveryError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "RecoveryError";
    this.code = code;
  }
}

// The broker's HTTP origin from its device WebSocket URL (same host and port).
export function httpBase(broker) {
  const insecure = insecureTransport(broker);
  if (insecure) throw new RecoveryError("insecure", insecure);
  const url = new URL(broker);
  return `${url.protocol === "wss:" ? "https:" : "http:"}//${url.host}`;
}

// `push` is a backup line's push part (js/backup.js) with its recovery seed. Returns
// {cid, user, keyPair, recovery} of the new credential; throws RecoveryError.
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
  let response;
  try {
    response = await fetch(`${httpBase(push.broker)}/v1/recoveries`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (exc) {
    throw new RecoveryError("unreachable", `the server could not be reached (${exc.message})`);
  }
  const answer = await response.json().catch(() => null);
  if (response.status !== 201) {
    const code = typeof answer?.code === "string" ? answer.code : `http_${response.status}`;
    throw new RecoveryError(code, WHY[code] ?? `the server refused the recovery (${code})`);
  }
  const fields = ["id", "rp", "user"];
  if (!answer || !fields.every((k) => typeof answer[k] === "string" && answer[k]))
    throw new RecoveryError("malformed", "the server's answer to the recovery is malformed");
  // The server must have recovered the account at the service the backup names.
  if (answer.rp !== push.rp)
    throw new RecoveryError("wrong_rp", `the server recovered the account at another service (${answer.rp})`);
  return { cid: answer.id, user: answer.user, keyPair, recovery };
}
