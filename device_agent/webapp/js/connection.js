// One WebSocket per broker (docs/protocol.md sections 2, 6.2, 15): offers pushauth.v2,
// authenticates every account held at that broker, enrolls, answers, revokes. A thin
// I/O shell around protocol/session.js; what it learns it reports as events:
//   "challenge" {frame}, "ended" {ch, reason, here} (here: answered on this phone, in
//   another tab or window), "removed" {cid, reason},
//   "notice" {frame} ("was this you?"), "notice_closed" {notice, cid, outcome, mine},
//   "status" {broker, state}, "fault" {broker, message}.

import { authBytes, enrollBytes, bindingBytes, recoveryAnswerBytes } from "./protocol/signing.js";
import { encodeFrame, SUBPROTOCOLS } from "./protocol/frames.js";
import { DeviceSession } from "./protocol/session.js";
import { insecureTransport } from "./protocol/uri.js";
import { sign } from "./keys.js";
import { BrokerClock } from "./brokerclock.js";

const REPLY_TIMEOUT_MS = 15000;
const MAX_BACKOFF_MS = 60000;
const STABLE_MS = 5000;
// An open connection silent this long is renewed when the app is back on screen or online
// (see reconnectNow): idle ones hear nothing (the broker's pings do not reach the page).
export const STALE_MS = 25000;
// While the app is on screen, `probe` runs this often: a connection silent for
// PROBE_AFTER_MS is asked with a `ping` frame and dropped if no reply comes in
// PROBE_TIMEOUT_MS, so a link lost without a word is noticed within about 35 s.
export const PROBE_EVERY_MS = 5000;
const PROBE_AFTER_MS = 20000;
const PROBE_TIMEOUT_MS = 10000;
const REMOVED = new Set(["credential_revoked", "unknown_credential"]);

export class ReplyError extends Error {
  // `here`: the request was answered on this phone, through another connection.
  constructor(code, message, here = false) {
    super(message || code);
    this.code = code;
    this.here = here;
  }
}

export class BrokerConnection {
  constructor(url, accounts, events) {
    this.url = url;
    this.accounts = accounts; // () => the accounts held at this broker now
    this.events = events;
    this.ws = null;
    this.session = null;
    this.clock = new BrokerClock(); // the broker's, from its last hello (section 13)
    this.waiting = new Map(); // rid or "ch:<id>" -> {resolve, reject, timer}
    this.nextRid = 1;
    this.attempt = 0;
    this.closed = false;
    this.authenticated = false;
    this.rejected = new Set(); // cids the broker refused at this connection's welcome
    this.helloWaiters = [];
    this.openedAt = 0;
    this.retryTimer = null;
    this.heardAt = 0; // when the broker's last message came (Date.now())
    this.heardAtMono = 0; // the same, on performance.now()
    this.probing = false; // a ping is waiting for its reply
  }

  brokerNow() {
    return this.clock.now();
  }

  // The broker's clock minus this phone's, now.
  get offsetMs() {
    return this.clock.offset();
  }

  // Now on the broker's clock, for a signature (an answer's `ts`). When this phone's clock
  // was stepped or it slept since the hello (brokerclock.js), the estimate may be off by
  // the step, and the service would refuse the answer as stale: a new connection's hello
  // says the broker's time first. Rejects as `answer` does when none comes.
  async signingNow() {
    if (this.clock.doubtful()) {
      this.dropNow();
      await this.online(REPLY_TIMEOUT_MS);
    }
    return this.brokerNow();
  }

  start() {
    const why = insecureTransport(this.url);
    if (why) {
      this.events.dispatchEvent(new CustomEvent("fault", { detail: { broker: this.url, message: why } }));
      return;
    }
    this.connect();
  }

  // Now rather than after the backoff (a push said a request is waiting, the app is back
  // on screen or the browser back online). An open connection that heard nothing from the
  // broker for `staleMs` is replaced too: a network that dropped it silently (a lift, a
  // train, a NAT that forgot it) leaves it open here for many minutes, saying "Connected"
  // while no request can arrive, and a page cannot send WebSocket pings to find out.
  // One whose broker clock is in doubt (a step of this phone's clock, or a sleep, since its
  // hello) is replaced too, so that the time left shown is right again.
  reconnectNow(staleMs = Infinity) {
    if (this.closed) return;
    const silent = this.silentMs() >= staleMs;
    if (this.ws?.readyState === WebSocket.OPEN && (silent || this.clock.doubtful())) this.dropNow();
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  // How long the broker has said nothing, by whichever clock saw longer: the phone's clock
  // stepped back leaves Date.now() short, and performance.now() may not count a sleep.
  silentMs() {
    return Math.max(Date.now() - this.heardAt, performance.now() - this.heardAtMono);
  }

  // A page cannot send WebSocket pings (docs/protocol.md 2.1), and an idle connection
  // hears nothing: without asking, one that the network lost without a word (a NAT that
  // forgot it) says "Connected" for many minutes while no request can arrive, on a phone
  // without Web Push (Safari before the app is installed) until the user reloads. So a
  // connection silent for PROBE_AFTER_MS asks with a `ping` frame; any reply (`pong`, or
  // an older broker's `error` unknown_frame) proves it alive, none in PROBE_TIMEOUT_MS
  // drops it and connects again.
  probe() {
    if (this.closed || this.probing || !this.authenticated || this.ws?.readyState !== WebSocket.OPEN) return;
    if (this.silentMs() < PROBE_AFTER_MS) return;
    const ws = this.ws;
    const rid = this.nextRid++;
    const done = () => (this.probing = false);
    const timer = setTimeout(() => {
      this.waiting.delete(String(rid));
      done();
      if (this.ws === ws) this.dropNow();
    }, PROBE_TIMEOUT_MS);
    this.probing = true;
    this.waiting.set(String(rid), { resolve: done, reject: done, timer });
    this.send({ t: "ping", rid });
  }

  // The browser says it is offline: the socket is as good as gone (a closing handshake
  // would wait for the network), so it is dropped now: what waits on it fails at once, the
  // status says so, and the backoff or `reconnectNow` (back online) connects again.
  dropNow() {
    const ws = this.ws;
    if (this.closed || !ws || ws.readyState > WebSocket.OPEN) return;
    this.abandon(1000);
    this.closedBy({ code: 1006, reason: "offline" });
  }

  // Close the socket without hearing of it again: its close event, whenever it comes
  // (a lost network holds it a minute) and whatever its code (a broker may echo ours),
  // must not end or retry a newer connection, nor be read as the broker's own close.
  abandon(code, reason) {
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onclose = ws.onmessage = null;
    ws.close(code, reason);
  }

  stop() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    // Its close is not reported: a new connection to the same server may be starting.
    this.abandon(1000);
    this.fail(new ReplyError("closed", "the app closed the connection"));
    this.failWaiters(new ReplyError("closed", "the app closed the connection"));
  }

  status(state) {
    this.events.dispatchEvent(new CustomEvent("status", { detail: { broker: this.url, state } }));
  }

  connect() {
    this.session = new DeviceSession();
    this.authenticated = false;
    this.status("connecting");
    const ws = new WebSocket(this.url, [...SUBPROTOCOLS]);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    ws.onopen = () => {
      this.openedAt = Date.now();
      // A broker that picked no version (or one not offered) speaks an older protocol.
      if (!SUBPROTOCOLS.includes(ws.protocol)) {
        ws.close(4406, "unsupported_version");
        this.fatal("the broker speaks an older or unknown protocol version; it or this app must be upgraded");
      }
    };
    ws.onmessage = (msg) => {
      this.heardAt = Date.now();
      this.heardAtMono = performance.now();
      this.receive(msg.data);
    };
    ws.onclose = (ev) => this.closedBy(ev);
  }

  async receive(data) {
    if (typeof data === "string") return this.breach("malformed", "a text message");
    let frame;
    try {
      frame = this.session.receive(new Uint8Array(data));
    } catch (exc) {
      if (exc.fatal === false) return; // an unknown frame type from a newer broker
      return this.breach(exc.code ?? "malformed", exc.message);
    }
    await this.handle(frame);
  }

  // The broker broke the protocol: close with the error's code, sign nothing more on
  // this connection, report it, and reconnect with backoff (sections 7.2 and 15). The
  // close is this app's, so the code that comes back is no 44xx "do not come back" from
  // the broker: the socket is abandoned, and the retry starts now.
  breach(code, message) {
    const close = { malformed: 4400, invalid_field: 4400, unexpected_frame: 4400, unsupported_version: 4406, frame_too_large: 4413 }[code] ?? 4400;
    this.session = null;
    this.abandon(close, code);
    this.events.dispatchEvent(new CustomEvent("fault", { detail: { broker: this.url, message: `the broker sent a bad frame (${code}): ${message}` } }));
    this.closedBy({ code: 1006, reason: code });
  }

  async handle(frame) {
    switch (frame.t) {
      case "hello": {
        this.clock.set(frame.time);
        await this.authenticate();
        for (const waiter of this.helloWaiters.splice(0)) waiter.resolve();
        break;
      }
      case "welcome":
        this.authenticated = true;
        // Refused here (removed while the app was away): asked nothing more on this connection.
        this.rejected = new Set(frame.rejected.map((r) => r.cid));
        this.status("online");
        this.emit("ready", { connection: this });
        for (const rejected of frame.rejected)
          if (REMOVED.has(rejected.code)) this.emit("removed", { cid: rejected.cid, reason: rejected.code });
        break;
      case "challenge":
        this.emit("challenge", { frame, connection: this });
        break;
      case "cancel": {
        const here = this.session.answeredHere(frame);
        this.emit("ended", { ch: frame.ch, reason: frame.reason, here });
        this.settle(`ch:${frame.ch}`, null, new ReplyError(frame.reason, `the request ended: ${frame.reason}`, here));
        break;
      }
      case "answer_result":
        this.settle(`ch:${frame.ch}`, frame);
        this.emit("ended", { ch: frame.ch, reason: frame.outcome, answered: true });
        break;
      case "enrolled":
      case "push_subscribed":
      case "pong":
        this.settle(String(frame.rid), frame);
        break;
      case "revoked":
        if (frame.rid !== null) this.settle(String(frame.rid), frame);
        this.emit("removed", { cid: frame.cid, reason: frame.reason });
        break;
      case "error": {
        const key = frame.ref === null ? null : this.waiting.has(frame.ref) ? frame.ref : `ch:${frame.ref}`;
        if (key !== null) this.settle(key, null, new ReplyError(frame.code, frame.message));
        break;
      }
      case "recovery_notice":
        this.emit("notice", { frame, connection: this });
        break;
      case "recovery_result":
        // `rid` is set on the connection whose answer it settles only.
        if (frame.rid !== null) this.settle(String(frame.rid), frame);
        this.emit("notice_closed", { notice: frame.notice, cid: frame.cid, outcome: frame.outcome, mine: frame.rid !== null });
        break;
      default:
        break;
    }
  }

  emit(type, detail) {
    this.events.dispatchEvent(new CustomEvent(type, { detail: { broker: this.url, ...detail } }));
  }

  async authenticate() {
    const nonce = this.session.nonce;
    const creds = [];
    for (const account of await this.accounts())
      creds.push({ cid: account.cid, sig: await sign(account.privateKey, authBytes(nonce, account.cid)) });
    this.send({ t: "authenticate", creds: creds.slice(0, 64) });
  }

  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new ReplyError("offline", "not connected to the broker");
    this.ws.send(encodeFrame(frame));
  }

  // No reply in REPLY_TIMEOUT_MS: the connection it went on is dropped and another is
  // made. Not closed politely: a network that lost the way back loses the broker's half of
  // the closing handshake too, and the browser then waits a minute for it, "Connected" and
  // asking nothing, no request able to arrive (a probe cannot help a closing socket).
  request(key, frame) {
    const ws = this.ws;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(key);
        reject(new ReplyError("timeout", "the broker did not answer in time"));
        if (this.ws === ws) this.dropNow();
      }, REPLY_TIMEOUT_MS);
      this.waiting.set(key, { resolve, reject, timer });
      try {
        this.send(frame);
      } catch (exc) {
        this.settle(key, null, exc);
      }
    });
  }

  settle(key, value, error = null) {
    const w = this.waiting.get(key);
    if (!w) return;
    this.waiting.delete(key);
    clearTimeout(w.timer);
    if (error) w.reject(error);
    else w.resolve(value);
  }

  fail(error) {
    for (const key of [...this.waiting.keys()]) this.settle(key, null, error);
  }

  // Connected now, or at the next hello; rejects when this attempt to connect fails (a
  // server refusing or unreachable) or no hello comes in time, so that what waits (an
  // enrollment) can say so rather than wait for good.
  whenConnected() {
    if (this.session?.nonce && this.ws?.readyState === WebSocket.OPEN) return Promise.resolve();
    if (this.closed) return Promise.reject(new ReplyError("closed", "the app closed the connection"));
    if (!navigator.onLine) return Promise.reject(new ReplyError("offline", "not connected to the broker"));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => (clearTimeout(waiter.timer), resolve()),
        reject: (error) => (clearTimeout(waiter.timer), reject(error)),
      };
      waiter.timer = setTimeout(() => {
        this.helloWaiters = this.helloWaiters.filter((w) => w !== waiter);
        reject(new ReplyError("timeout", "the server did not answer in time"));
      }, REPLY_TIMEOUT_MS);
      this.helloWaiters.push(waiter);
    });
  }

  failWaiters(error) {
    for (const waiter of this.helloWaiters.splice(0)) waiter.reject(error);
  }

  // Enroll a new key with the link's token (section 5 `enroll`, 11.3 binding).
  // `recoveryPk`: the public half of the account's recovery key, or null.
  async enroll(link, keyPair, deviceName, recoveryPk = null) {
    await this.whenConnected();
    const rid = this.nextRid++;
    const binding = link.es ? await sign(keyPair.privateKey, bindingBytes(link.rp, link.token, link.es, keyPair.publicKey, deviceName, recoveryPk)) : null;
    const sig = await sign(keyPair.privateKey, enrollBytes(this.session.nonce, link.token, keyPair.publicKey, deviceName, recoveryPk));
    return this.request(String(rid), { t: "enroll", rid, token: link.token, pk: keyPair.publicKey, name: deviceName, rpk: recoveryPk, binding, sig });
  }

  // "Was this you?" (section 5 `recovery_answer`): `decision` is "confirm" or "disown",
  // signed with the key of the notice's (old) credential; resolves with the
  // `recovery_result`, rejects with the broker's error code.
  async answerNotice(notice, privateKey, decision) {
    const rid = this.nextRid++;
    const ts = await this.signingNow();
    const sig = await sign(privateKey, recoveryAnswerBytes(notice.notice, notice.cid, notice.new_cid, decision, ts));
    return this.request(String(rid), { t: "recovery_answer", rid, notice: notice.notice, cid: notice.cid, decision, ts, sig });
  }

  // An answer typed while the connection is down but the browser is online (a lift, a
  // train, the moments after the network came back) waits for the next connection, tried
  // now rather than after the backoff, for up to the reply timeout: before, it was refused
  // ("not connected") while the status said "online" again a moment later. Offline, as
  // the browser says, it fails at once: no connection can come.
  async answer(frame) {
    await this.online(REPLY_TIMEOUT_MS);
    return this.request(`ch:${frame.ch}`, { t: "answer", ...frame });
  }

  // Resolves once this connection is authenticated (now, or at its next welcome); rejects
  // after `ms` without one, or when the connection is stopped for good.
  online(ms) {
    if (this.authenticated && this.ws?.readyState === WebSocket.OPEN) return Promise.resolve();
    if (this.closed) return Promise.reject(new ReplyError("closed", "the app closed the connection"));
    if (!navigator.onLine) return Promise.reject(new ReplyError("offline", "not connected to the broker"));
    return new Promise((resolve, reject) => {
      const done = (error) => {
        clearTimeout(timer);
        this.events.removeEventListener("status", seen);
        this.events.removeEventListener("fault", seen);
        error ? reject(error) : resolve();
      };
      const seen = ({ type, detail }) => {
        if (detail.broker !== this.url) return;
        if (type === "status" && detail.state === "online") done(null);
        else if (this.closed) done(new ReplyError("closed", detail.message ?? "the connection was closed"));
        else if (!navigator.onLine) done(new ReplyError("offline", "not connected to the broker"));
      };
      const timer = setTimeout(() => done(new ReplyError("offline", "not connected to the broker")), ms);
      this.events.addEventListener("status", seen);
      this.events.addEventListener("fault", seen);
      this.reconnectNow();
    });
  }

  // Web Push (docs/protocol.md appendix A): with `sub` null, asks for the broker's key
  // and removes any subscription; else subscribes `cids` to it. A broker without push
  // answers push_unavailable, an older one unknown_frame: both reject.
  async pushSubscribe(cids, sub) {
    const rid = this.nextRid++;
    return this.request(String(rid), { t: "push_subscribe", rid, cids, endpoint: sub?.endpoint ?? null, p256dh: sub?.p256dh ?? null, auth: sub?.auth ?? null });
  }

  async revoke(cid) {
    const rid = this.nextRid++;
    return this.request(String(rid), { t: "revoke", rid, cid });
  }

  fatal(message) {
    this.closed = true;
    this.failWaiters(new ReplyError("closed", message));
    this.events.dispatchEvent(new CustomEvent("fault", { detail: { broker: this.url, message } }));
  }

  // Reconnect with full-jitter backoff (section 15), except after a 44xx close other
  // than 4408/4429, which needs the user or a new version.
  closedBy(ev) {
    this.fail(new ReplyError("offline", "the connection to the broker closed"));
    if (!this.session?.nonce) this.failWaiters(new ReplyError("offline", "could not connect to the server"));
    this.status("offline");
    if (this.closed) return;
    if (ev.code >= 4400 && ev.code < 4500 && ev.code !== 4408 && ev.code !== 4429) {
      return this.fatal(`the broker closed the connection (${ev.code} ${ev.reason}); reopen the app to try again`);
    }
    if (Date.now() - this.openedAt >= STABLE_MS && this.openedAt) this.attempt = 0;
    const wait = Math.random() * Math.min(MAX_BACKOFF_MS, 1000 * 2 ** this.attempt);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), wait);
  }
}
