// The sign-in requests the app holds, newest first, and how one is answered
// (docs/protocol.md section 5 `answer`, 13 freshness). No DOM here.

import { answerBytes, contextHash } from "./protocol/signing.js";
import { sign } from "./keys.js";

// Context keys the RP SDK and the demo RP send, with the labels people read
// (device_agent/display.py; "action": what the demo RP asks for other than a sign-in,
// e.g. "verify it's you" before a security change); other keys (the setup test's
// `purpose` among them) are shown as they come: the user must see everything the answer signs.
export const CONTEXT_LABELS = [
  ["app", "App"],
  ["application", "App"],
  ["action", "Request"],
  ["location", "Place"],
  ["ip", "IP address"],
  ["browser", "Browser"],
  ["os", "System"],
  ["device", "Device"],
];

export function contextRows(ctx) {
  const known = new Set(CONTEXT_LABELS.map(([k]) => k));
  const rows = CONTEXT_LABELS.filter(([k]) => k in ctx).map(([k, label]) => [label, ctx[k]]);
  for (const key of Object.keys(ctx).sort()) if (!known.has(key)) rows.push([key, ctx[key]]);
  return rows;
}

// Far more than live at once (a challenge lives 10 minutes at most), and small.
const GONE_KEPT = 256;

export class Prompts {
  constructor() {
    this.byCh = new Map(); // ch -> {frame, connection}
    // Requests that left here (answered, expired, ended): the broker sends a pending one
    // again on every new connection, and an answer given just after a reconnect (one
    // waiting for the connection, or for a fresh hello: connection.js signingNow) raced
    // that copy, which came back on screen after "Approved" until it expired.
    this.gone = new Set();
  }

  add(frame, connection) {
    if (this.gone.has(frame.ch)) return;
    // One frame per credential of the same user: the first one answers for them all.
    if (!this.byCh.has(frame.ch)) this.byCh.set(frame.ch, { frame, connection });
  }

  remove(ch) {
    this.gone.add(ch);
    if (this.gone.size > GONE_KEPT) this.gone.delete(this.gone.values().next().value);
    return this.byCh.delete(ch);
  }

  dropCredential(cid) {
    for (const [ch, p] of this.byCh) if (p.frame.cid === cid) this.byCh.delete(ch);
  }

  // The newest live request (by creation time: after a reconnect the broker re-sends
  // pending ones in no promised order), dropping any that expired by the broker clock.
  current() {
    let newest = null;
    for (const [ch, p] of this.byCh) {
      if (p.connection.brokerNow() >= p.frame.expires) {
        this.byCh.delete(ch);
        continue;
      }
      if (!newest || p.frame.created > newest.frame.created) newest = p;
    }
    return newest;
  }

  get size() {
    return this.byCh.size;
  }
}

export async function signAnswer(prompt, account, decision, number) {
  const { frame, connection } = prompt;
  const ts = await connection.signingNow();
  if (ts >= frame.expires) throw new Error("this request has expired");
  const ctxHash = await contextHash(frame.ctx);
  const bytes = answerBytes({
    rp: frame.rp,
    ch: frame.ch,
    nonce: frame.nonce,
    rpNonce: frame.rp_nonce,
    cid: frame.cid,
    decision,
    number,
    ts,
    ctxHash,
  });
  const sig = await sign(account.privateKey, bytes);
  return { ch: frame.ch, cid: frame.cid, decision, number, ts, ctx_hash: ctxHash, sig };
}
