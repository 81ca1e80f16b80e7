// The web authenticator's UI: a thin shell over the protocol modules, the broker
// connections and IndexedDB. Text from brokers, RPs and links goes in through
// textContent and printable() only.

import * as db from "./db.js";
import { newKeyPair, newRecoveryKey, publicKeyOfSeed } from "./keys.js";
import * as sealed from "./sealed.js";
import { base32Encode, equal, hex, utf8 } from "./protocol/bytes.js";
import { BrokerConnection, PROBE_EVERY_MS, ReplyError, STALE_MS } from "./connection.js";
import { parseEnrollmentUri, insecureTransport, unwrap } from "./protocol/uri.js";
import { hasUnsafe, printable } from "./protocol/text.js";
import { Prompts, contextRows, signAnswer } from "./prompts.js";
import { SETUP_TEST, VERIFY, purposeOf } from "./protocol/purpose.js";
import { rotationTs } from "./protocol/signing.js";
import { counterCode, totp, secondsLeft } from "./totp.js";
import * as webauthn from "./webauthn.js";
import { scanImage, startScan, stopScan, scanSupported } from "./scan.js";
import { PUSH, browserCanPush, brokerKey, turnOn } from "./push.js";
import * as brokerHttp from "./brokerhttp.js";
import { defaultDeviceName } from "./devicename.js";

const $ = (id) => document.getElementById(id);
const events = new EventTarget();
const connections = new Map(); // broker URL -> BrokerConnection
const prompts = new Prompts();
const notices = new Map(); // notice id -> {frame, connection}: open "was this you?" questions
const codeParams = new Map(); // cid -> TOTP parameters with the secret unsealed (memory only)
let view = "home";
let openAccount = null;
let expiryTimer = null;
let accountsCache = [];
const pushState = new Map(); // broker URL -> {state, key, why}

const ENDED = {
  answered: "This request was answered on another device.",
  cancelled: "The sign-in request was cancelled.",
  superseded: "This request was replaced by a newer one.",
  expired: "The sign-in request expired.",
  withdrawn: "The sign-in request was withdrawn.",
  revoked: "The account of this request was removed.",
};
// The same ends of a setup's test notification (docs/protocol.md 15.1), which the app
// words "Finish adding this phone?": no sign-in was under way. The service lists the phone
// as not finished; its security page sends the test again.
const SETUP_ENDED = {
  cancelled: "The test notification was cancelled. Finish adding this phone on the service's security page.",
  expired: "The test notification expired. Finish adding this phone on the service's security page.",
  withdrawn: "The test notification was withdrawn.",
};
// The same ends of a "verify it's you" (docs/protocol.md 15.1, `purpose` = "verify"): a
// person already signed in confirming it is them; no sign-in was under way.
const VERIFY_ENDED = {
  cancelled: "The verification request was cancelled.",
  expired: "The verification request expired.",
  withdrawn: "The verification request was withdrawn.",
};
const ENDED_BY_PURPOSE = { [SETUP_TEST]: SETUP_ENDED, [VERIFY]: VERIFY_ENDED };
const endedWords = (purpose, code) => ENDED_BY_PURPOSE[purpose]?.[code] ?? ENDED[code];
const endedText = (frame, code) => endedWords(frame ? purposeOf(frame.ctx) : null, code);
// A `cancel` naming this phone's own credential: answered in another tab or window.
const ANSWERED_HERE = "This request was answered on this phone, in another window or tab.";
const OUTCOMES = {
  approved: "Approved. You can return to the sign-in page.",
  denied: "Denied. Nobody was signed in.",
  number_mismatch: "The number did not match, so the sign-in was denied.",
  reported: "Reported. The service was told and sign-in requests are paused.",
};
// A setup's test notification approves no sign-in: its answer decides whether the
// service finishes adding this phone (as device_agent/messages.py words it).
const SETUP_OUTCOMES = {
  approved: "Approved. The service can now finish adding this phone.",
  denied: "Denied. This phone is not added.",
  number_mismatch: "The number did not match, so this phone is not added.",
  reported: "Reported. Adding this phone was refused and the service was told it was not you.",
};
// A "verify it's you" approves no sign-in: it confirms a person already signed in before
// a sensitive change (as device_agent/messages.py words it).
const VERIFY_OUTCOMES = {
  approved: "Approved. You can return to the page that asked you to verify.",
  denied: "Denied. The verification was refused.",
  number_mismatch: "The number did not match, so the verification was denied.",
  reported: "Reported. The service was told it was not you and sign-in requests are paused.",
};
const OUTCOMES_BY_PURPOSE = { [SETUP_TEST]: SETUP_OUTCOMES, [VERIFY]: VERIFY_OUTCOMES };
const NOTICE_OUTCOMES = {
  confirmed: "Thanks. Both devices keep working; remove the old one on the service's security page when you stop using it.",
  disowned: "The new device was removed and the service was told it was not you; sign-in requests are paused until the service lifts the pause.",
  withdrawn: "The recovery question was closed: one of the two devices was removed meanwhile.",
};
const REMOVALS = {
  removed_by_device: "was removed from this phone.",
  removed_by_rp: "was removed by the service.",
  rp_removed: "was removed: the service no longer uses this server.",
  disowned: "was removed after a recovery was disowned.",
};

// `about`: the id of the sign-in request whose end (or answer) the message tells. It goes
// when another request comes on screen: "The sign-in request was cancelled." above the
// request that "Send again" brought read as if that one were cancelled. (The same request
// shown again, re-sent after a reconnect before its end arrived, keeps it.)
function toast(message, { about = null } = {}) {
  const el = $("toast");
  el.textContent = "";
  // A fresh text node each time, so screen readers announce a repeated message too.
  // Made printable here, once for every message: some carry a link's names as they came
  // (docs/protocol.md 18.4), "Added alice at Contoso Portal" among them, where a line break
  // or a right-to-left override was written as it was. Text printable already is unchanged.
  cancelAnimationFrame(toast.frame);
  toast.frame = requestAnimationFrame(() => (el.textContent = printable(message)));
  toast.about = about;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.textContent = ""), 6000);
}

function dropToastOfOtherRequest(ch) {
  if (!toast.about || toast.about === ch) return;
  cancelAnimationFrame(toast.frame);
  clearTimeout(toast.timer);
  $("toast").textContent = "";
  toast.about = null;
}

// An error that says an answer was not sent for want of a connection, by its element id:
// the broker of that connection. Once the connection is back online the error goes (the
// answer would be sent now), where it stayed saying so until the next press.
const unsentAt = new Map();
const CONNECTION_FAILURES = new Set(["offline", "timeout", "closed"]);

// An error shown under a form; `field`, the input it is about: marked invalid and
// described by the message, so that a screen reader says both on the field (and the mark
// goes with the message).
function showError(id, message, field) {
  unsentAt.delete(id);
  const el = $(id);
  el.textContent = message ?? "";
  el.hidden = !message;
  for (const marked of document.querySelectorAll(`[aria-invalid][aria-describedby="${id}"]`)) {
    marked.removeAttribute("aria-invalid");
    marked.removeAttribute("aria-describedby");
  }
  if (message && field) {
    $(field).setAttribute("aria-invalid", "true");
    $(field).setAttribute("aria-describedby", id);
  }
}

// "1 account", "2 accounts": a count with its noun in the right number.
const counted = (n, noun) => `${n} ${n === 1 ? noun : `${noun}s`}`;
const moreWaiting = (n, noun) => `${n} more ${n === 1 ? `${noun} is` : `${noun}s are`} waiting.`;

function text(tag, value, className) {
  const el = document.createElement(tag);
  el.textContent = printable(value);
  if (className) el.className = className;
  return el;
}

function fillDetails(dl, rows) {
  dl.replaceChildren();
  for (const [label, value] of rows) dl.append(text("dt", label), text("dd", value || "(not given)"));
}

// -- accounts and connections ----------------------------------------------------

// Accounts this phone holds a key of (not codes-only ones, nor restored push accounts
// that wait for a new QR code): the ones a broker connection authenticates.
const hasKey = (a) => !!a.privateKey;

async function accountsAt(broker) {
  return (await db.listAccounts()).filter((a) => hasKey(a) && a.broker === broker);
}

function connectionFor(broker) {
  let conn = connections.get(broker);
  if (!conn) {
    conn = new BrokerConnection(broker, () => accountsAt(broker), events);
    connections.set(broker, conn);
    conn.start();
  }
  return conn;
}

async function refreshAccounts() {
  accountsCache = await db.listAccounts();
  renderAccounts();
  renderMoves();
  renderConn();
  autoBackup();
}

function renderConn() {
  const el = $("conn");
  // Verification-code accounts need no server: only push accounts connect.
  if (!accountsCache.some(hasKey)) {
    el.dataset.state = "none";
    el.textContent = !accountsCache.length ? "No accounts yet" : accountsCache.some((a) => a.broker) ? "Not connected" : "Codes only";
    return;
  }
  const states = [...connections.values()].map((c) => c.state ?? "connecting");
  const online = states.length > 0 && states.every((s) => s === "online");
  el.dataset.state = online ? "online" : states.includes("online") ? "partly" : "offline";
  // "Connecting…" with the network off (flight mode, no signal) promised what cannot come.
  el.textContent = online ? "Connected" : navigator.onLine ? "Connecting…" : "Offline";
}

// An answer that could not leave the phone, in the user's words ("broker" is ours).
const NOT_SENT = () =>
  navigator.onLine
    ? "Not connected to the server right now, so the answer was not sent. Try again in a moment."
    : "This phone is offline, so the answer was not sent. Try again once it is connected.";

function renderAccounts() {
  const list = $("accounts");
  list.replaceChildren();
  $("empty").hidden = accountsCache.length > 0;
  for (const account of accountsCache) {
    const li = document.createElement("li");
    li.dataset.cid = account.cid;
    const head = document.createElement("div");
    head.className = "acct-head";
    const names = document.createElement("div");
    names.append(text("div", account.name, "acct-name"), text("div", account.rp_name, "acct-rp"));
    if (account.actionRequired) names.append(text("div", actionText(account), "acct-action"));
    const manage = document.createElement("button");
    manage.type = "button";
    manage.textContent = "Manage";
    manage.setAttribute("aria-label", `Manage ${printable(account.name)}`);
    manage.addEventListener("click", () => openManage(account.cid));
    head.append(names, manage);
    li.append(head);
    if (account.totp) {
      const row = document.createElement("div");
      row.className = "code-row";
      const code = document.createElement("button");
      code.type = "button";
      code.className = "code";
      code.dataset.role = "code";
      code.setAttribute("aria-label", codeLabel(account, null));
      code.addEventListener("click", () => copyCode(code));
      row.append(code);
      if (isHotp(account)) {
        // A counter-based code is made when asked for (each one works once at the
        // service), not every 30 seconds.
        const shown = hotpShown.get(account.cid);
        if (shown) {
          code.dataset.code = shown;
          code.textContent = spaced(shown);
          code.setAttribute("aria-label", codeLabel(account, shown));
        } else {
          code.textContent = "No code yet";
          code.disabled = true;
        }
        const next = document.createElement("button");
        next.type = "button";
        next.className = "next-code";
        next.textContent = "New code";
        next.setAttribute("aria-label", `New verification code for ${printable(account.name)}`);
        next.addEventListener("click", () => newCounterCode(account.cid));
        row.append(next);
      } else {
        const secs = text("span", "", "secs");
        secs.dataset.role = "secs";
        row.append(secs);
      }
      li.append(row);
    }
    list.append(li);
  }
  tickCodes();
}

function tickPrompt() {
  const prompt = prompts.current();
  if (!prompt) return;
  // Never more than its lifetime: the estimate of the broker's clock may run a little early.
  const now = Math.max(prompt.connection.brokerNow(), prompt.frame.created);
  const left = Math.max(0, Math.ceil((prompt.frame.expires - now) / 1000));
  // Minutes and seconds, as the demo RP's page that shows the number counts down (one
  // way to say one time limit on both screens, WCAG 2.2.1).
  $("prompt-left").textContent = `Expires in ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  // The countdown is not read out every second; a screen reader hears the time left once,
  // when it gets short (as on the demo RP's page with the number).
  const warning = $("prompt-warn");
  if (warning.dataset.ch !== prompt.frame.ch) {
    warning.dataset.ch = prompt.frame.ch;
    warning.dataset.said = "";
    warning.textContent = "";
  }
  if (!warning.dataset.said && left > 0 && left <= WARN_S) {
    warning.dataset.said = "1";
    warning.textContent = `${left} seconds left.`;
  }
}
const WARN_S = 20;

// The account's TOTP parameters with its secret, unsealed once and kept in memory.
async function totpParams(account) {
  let params = codeParams.get(account.cid);
  if (!params) {
    const { sealed: box, ...rest } = account.totp;
    const secret = box ? new TextDecoder().decode(await sealed.open(box, `totp:${account.cid}`)) : account.totp.secret;
    params = { ...rest, secret };
    codeParams.set(account.cid, params);
  }
  return params;
}

async function sealedTotp(cid, params) {
  if (!params) return null;
  const { secret, ...rest } = params;
  return { ...rest, sealed: await sealed.seal(utf8(secret), `totp:${cid}`) };
}

// Accounts stored by an earlier version of the app kept the TOTP secret as plain text.
async function sealPlainSecrets() {
  for (const account of await db.listAccounts())
    if (account.totp?.secret) await db.putAccount({ ...account, totp: await sealedTotp(account.cid, account.totp) });
}

async function tickCodes() {
  tickPrompt();
  const now = Date.now();
  for (const account of accountsCache) {
    if (!account.totp || isHotp(account)) continue;
    const li = document.querySelector(`li[data-cid="${CSS.escape(account.cid)}"]`);
    if (!li) continue;
    const params = await totpParams(account);
    const code = await totp(params, now);
    const btn = li.querySelector('[data-role="code"]');
    if (btn.dataset.code !== code) {
      btn.dataset.code = code;
      btn.textContent = spaced(code);
      btn.setAttribute("aria-label", codeLabel(account, code));
    }
    li.querySelector('[data-role="secs"]').textContent = `${secondsLeft(params.period, now)} s left`;
  }
}

// The code button's name says whose code it is, the code itself (a name set by
// aria-label replaces the button's text for a screen reader) and what a tap does.
const codeLabel = (account, code) =>
  `Verification code for ${printable(account.name)}${code ? `: ${spaced(code)}` : ""}; tap to copy`;

const spaced = (code) => (code.length === 8 ? `${code.slice(0, 4)} ${code.slice(4)}` : `${code.slice(0, 3)} ${code.slice(3)}`);

// The codes of counter-based accounts shown since the app opened (cid -> code).
const hotpShown = new Map();

// The next code of a counter-based account. The counter moves on and is stored before
// the code is shown, as the agent does, so that no code is ever shown twice; the
// automatic server copy follows (it holds the counter). One at a time: two quick taps
// must not read the same counter.
let counterChain = Promise.resolve();
const newCounterCode = (cid) =>
  (counterChain = counterChain
    .then(() => nextCounterCode(cid))
    .catch((exc) => toast(`No new code: ${printable(exc.message)}`)));

async function nextCounterCode(cid) {
  const account = await db.getAccount(cid);
  if (!account?.totp) return;
  const params = await totpParams(account);
  const code = await counterCode(params);
  await db.putAccount({ ...account, totp: { ...account.totp, counter: params.counter + 1 } });
  codeParams.delete(cid);
  hotpShown.set(cid, code);
  await refreshAccounts();
}

async function copyCode(button) {
  try {
    await navigator.clipboard.writeText(button.dataset.code);
    toast("Code copied");
  } catch {
    toast(`Code ${button.dataset.code}: copying is not allowed here`);
  }
}

// -- moving codes to another app (js/export.js) ------------------------------------------

// The secrets appear only when asked for, and go when hidden or when the screen is left.
// Where the user asked for the screen lock before approving, it is asked for here too:
// whoever holds the unlocked phone could otherwise copy every code generator.
async function showExport() {
  showError("export-error", null);
  const accounts = await db.listAccounts(); // as stored: the screen lock setting included
  const locked = accounts.find((a) => a.uvCredential);
  if (locked) {
    try {
      await webauthn.verifyUser(locked.uvCredential);
    } catch {
      return showError("export-error", "The screen lock did not confirm it was you; nothing is shown.");
    }
  }
  const { exportOf, drawQr } = await import("./export.js");
  const items = [];
  for (const account of accounts) {
    const totp = account.totp ? await totpParams(account) : null;
    items.push({ name: account.name, label: account.label, issuer: account.rp_name, totp });
  }
  const { links, codes, refused, notInCodes } = exportOf(items);
  $("export-qr").replaceChildren(
    ...codes.map((uri, i) => {
      const canvas = document.createElement("canvas");
      drawQr(canvas, uri);
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", `QR code ${i + 1} of ${codes.length} for Google Authenticator`);
      canvas.dataset.uri = uri;
      const li = document.createElement("li");
      li.append(text("p", `QR code ${i + 1} of ${codes.length}`), canvas);
      return li;
    }),
  );
  $("export-qr-title").hidden = !codes.length;
  $("export-links").value = links.join("\n");
  $("export-links-row").hidden = !links.length;
  $("export-report").replaceChildren(
    ...refused.map((r) => text("li", `not exported: ${r.label}: ${r.reason}`)),
    ...notInCodes.map((r) => text("li", `not in the QR codes: ${r.label}: ${r.reason} (its link is above)`)),
  );
  $("export-status").textContent = links.length
    ? `${counted(links.length, "account")} with verification codes; ${counted(codes.length, "QR code")} for Google Authenticator.`
    : "No account here has verification codes to move.";
  $("export-out").hidden = false;
  $("export-show").hidden = true;
}

function hideExport() {
  showError("export-error", null);
  $("export-qr").replaceChildren();
  $("export-links").value = "";
  $("export-report").replaceChildren();
  $("export-status").textContent = "";
  $("export-out").hidden = true;
  $("export-show").hidden = false;
}

async function copyExportLinks() {
  try {
    await navigator.clipboard.writeText($("export-links").value);
    toast("Links copied: paste them only into the other app");
  } catch {
    $("export-links").select();
    toast("Copying is not allowed here: the links are selected, copy them by hand");
  }
}

// -- views -------------------------------------------------------------------------

function show(name) {
  const was = view;
  view = name;
  render();
  // A screen the user opens takes the focus to its heading (announced; Tab goes on from
  // there), not left on <body> with the button that went. Not under a request or question.
  if (was !== name && !$(name).hidden) $(`${name}-title`).focus();
}

const VIEWS = ["home", "add", "prompt", "notice", "account", "backup"];

// A sign-in request comes first (it expires in minutes), then a recovery question,
// then the screen the user chose.
function render() {
  const prompt = prompts.current();
  const notice = prompt ? null : currentNotice();
  const shown = prompt ? "prompt" : notice ? "notice" : view;
  const was = VIEWS.find((id) => !$(id).hidden);
  const fresh = prompt ? $("prompt").dataset.ch !== prompt.frame.ch : notice ? $("notice").dataset.notice !== notice.frame.notice : false;
  for (const id of VIEWS) $(id).hidden = id !== shown;
  if (prompt && fresh) dropToastOfOtherRequest(prompt.frame.ch);
  if (prompt) renderPrompt(prompt);
  else $("prompt").removeAttribute("data-ch");
  if (notice) renderNotice(notice);
  else $("notice").removeAttribute("data-notice");
  // A request or a question comes unbidden and replaces the screen, and the screen comes
  // back when it ends: the focus goes to the heading of what is shown, so that a screen
  // reader says what it is and Tab goes on from there (not from a hidden screen's button).
  if (fresh || (was !== shown && (was === "prompt" || was === "notice"))) $(`${shown}-title`).focus();
  // The title names the screen (a screen reader's "say title", the app switcher): a
  // request says "Are you trying to sign in?", not the same words on every screen.
  document.title = `${$(`${shown}-title`).textContent} · ${APP_TITLE}`;
}
const APP_TITLE = "pushauth authenticator";

// The shown request's time is up by the broker's clock: it leaves the screen at once,
// whether or not the broker's own `cancel` (reason expired) has arrived yet.
function expireShown(ch) {
  const prompt = prompts.current();
  if (prompt || $("prompt").dataset.ch !== ch) return render();
  prompts.remove(ch);
  toast(endedWords($("prompt").dataset.purpose, "expired"), { about: ch });
  render();
}

// Where the user reads the number, and what the request asks, by its agreed purpose
// (docs/protocol.md 15.1), as device_agent/display.py says it: a setup test notification's
// number is on the service's page for adding a device, a "verify it's you"'s on the page
// that asked the person to verify.
const NUMBER_SOURCES = { [SETUP_TEST]: "the setup page", [VERIFY]: "the page asking you to verify" };
const numberSource = (frame) => NUMBER_SOURCES[purposeOf(frame.ctx)] ?? "the sign-in screen";
const TITLES = { [SETUP_TEST]: "Finish adding this phone?", [VERIFY]: "Is this you verifying your identity?" };
const promptTitle = (frame) => TITLES[purposeOf(frame.ctx)] ?? "Are you trying to sign in?";
// A request without number matching (the frame's `nm` false, docs/protocol.md section 5):
// no number field, only the answers, and the words that the person's own knowledge of
// this sign-in is all there is to go on.
const hasNumber = (frame) => frame.nm !== false;

function renderPrompt(prompt) {
  const { frame } = prompt;
  const section = $("prompt");
  const fresh = section.dataset.ch !== frame.ch;
  $("prompt-title").textContent = promptTitle(frame);
  section.dataset.purpose = purposeOf(frame.ctx) ?? ""; // for its end (expireShown)
  $("number-label").textContent = `Enter the number shown on ${numberSource(frame)}`;
  for (const id of ["number-label", "number", "keypad"]) $(id).hidden = !hasNumber(frame);
  $("no-number").hidden = hasNumber(frame);
  const account = accountsCache.find((a) => a.cid === frame.cid);
  // The service's name as stored from the link the user scanned, not the broker's
  // word (docs/protocol.md section 18.3).
  const rows = [
    ["Service", account ? account.rp_name : frame.rp_name],
    ["Account", account ? account.label : frame.account],
    ...contextRows(frame.ctx),
    ["Time", new Date(frame.created - prompt.connection.offsetMs).toLocaleTimeString()],
  ];
  if (account && frame.rp_name !== account.rp_name) rows.push(["Server calls it", frame.rp_name]);
  fillDetails($("prompt-details"), rows);
  tickPrompt();
  $("prompt-more").hidden = prompts.size < 2;
  $("prompt-more").textContent = moreWaiting(prompts.size - 1, "request");
  if (fresh) {
    section.dataset.ch = frame.ch;
    $("number").value = "";
    $("number").maxLength = frame.digits;
    confirmReport(false);
    showError("prompt-error", null);
    setBusy(false);
    clearTimeout(expiryTimer);
    expiryTimer = setTimeout(() => expireShown(frame.ch), Math.max(0, frame.expires - prompt.connection.brokerNow()) + 50);
  }
}

// While an answer is on its way the answers wait: marked aria-disabled, not disabled,
// which would drop the keyboard focus on <body> (Tab then starts over at the top of the
// page), and a slow one says so once, in place of silence for up to the reply timeout.
let answering = false;
let slowTimer = null;
const SLOW_MS = 1000;

function setBusy(busy) {
  answering = busy;
  for (const id of ["approve", "deny", "report", "report-yes", "report-back"]) {
    if (busy) $(id).setAttribute("aria-disabled", "true");
    else $(id).removeAttribute("aria-disabled");
  }
  clearTimeout(slowTimer);
  $("prompt-sending").textContent = "";
  if (busy) slowTimer = setTimeout(() => ($("prompt-sending").textContent = "Sending your answer: the connection is slow."), SLOW_MS);
}

// "This wasn't me" does more than deny: it asks first, saying what follows, in place of
// the answers (the focus goes to the question, and back to the button on "Back").
function confirmReport(ask) {
  $("report-confirm").hidden = !ask;
  $("number-form").hidden = ask;
  $("answer-row").hidden = ask;
  if (!ask) return;
  const prompt = prompts.current();
  const account = prompt && accountsCache.find((a) => a.cid === prompt.frame.cid);
  const service = printable(account ? account.rp_name : (prompt?.frame.rp_name ?? "the service"));
  $("report-text").textContent =
    `This request is denied, ${service} is told that it was not you, and further sign-in requests ` +
    `for this account are paused until ${service} lifts the pause.`;
  $("report-title").focus();
}

// -- answering -----------------------------------------------------------------------

async function decide(decision) {
  const prompt = prompts.current();
  if (!prompt || answering) return;
  // Checked here, before the first await: a second Enter in the meantime finds it busy.
  let number = "";
  if (decision === "approve" && hasNumber(prompt.frame)) {
    number = $("number").value.trim();
    if (!/^[0-9]{1,8}$/.test(number) || number.length !== prompt.frame.digits) {
      showError("prompt-error", `Type the ${prompt.frame.digits}-digit number shown on ${numberSource(prompt.frame)}.`, "number");
      $("number").focus();
      return;
    }
  }
  setBusy(true);
  showError("prompt-error", null);
  try {
    const account = await db.getAccount(prompt.frame.cid);
    if (!account) return;
    if (decision === "approve" && account.uvCredential) {
      try {
        await webauthn.verifyUser(account.uvCredential);
      } catch {
        showError("prompt-error", "The screen lock did not confirm it was you; nothing was sent.");
        setBusy(false);
        return;
      }
    }
    const answer = await signAnswer(prompt, account, decision, number);
    const result = await prompt.connection.answer(answer);
    prompts.remove(prompt.frame.ch);
    const words = OUTCOMES_BY_PURPOSE[purposeOf(prompt.frame.ctx)] ?? OUTCOMES;
    toast(words[result.outcome] ?? `The request ended (${printable(result.outcome)}).`, { about: prompt.frame.ch });
  } catch (exc) {
    const code = exc instanceof ReplyError ? exc.code : "";
    if (code in ENDED || code === "already_answered" || code === "challenge_expired" || code === "unknown_challenge") {
      prompts.remove(prompt.frame.ch);
      toast(exc.here ? ANSWERED_HERE : endedText(prompt.frame, code) ?? "This request has already ended.", { about: prompt.frame.ch });
    } else {
      showError("prompt-error", code === "offline" ? NOT_SENT() : `Could not send the answer: ${printable(exc.message)}`);
      if (CONNECTION_FAILURES.has(code)) unsentAt.set("prompt-error", prompt.connection.url);
    }
  } finally {
    setBusy(false);
    render();
  }
}

function buildKeypad() {
  const pad = $("keypad");
  const keys = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "clear", "0", "back"];
  for (const key of keys) {
    const b = document.createElement("button");
    b.type = "button";
    if (key === "back") (b.textContent = "⌫"), b.setAttribute("aria-label", "Delete last digit");
    else if (key === "clear") (b.textContent = "C"), b.setAttribute("aria-label", "Clear the number");
    else b.textContent = key;
    b.dataset.key = key;
    b.addEventListener("click", () => {
      const input = $("number");
      if (key === "back") input.value = input.value.slice(0, -1);
      else if (key === "clear") input.value = "";
      else if (input.value.length < input.maxLength) input.value += key;
    });
    pad.append(b);
  }
  $("number").addEventListener("input", (e) => (e.target.value = asciiDigits(e.target.value)));
}

// The number as typed: a keyboard in another script types its own digits (Arabic-Indic ٤٧,
// Persian ۴۷, Devanagari ४७, full-width ４７), which are the same number; all else goes.
// Unicode encodes each script's digits as one run from 0 to 9, runs of a script side by
// side: a digit's value is how far it is into its run.
function asciiDigits(text) {
  let out = "";
  for (const ch of text) {
    if (ch >= "0" && ch <= "9") out += ch;
    else if (/\p{Nd}/u.test(ch)) {
      let from = ch.codePointAt(0);
      while (/\p{Nd}/u.test(String.fromCodePoint(from - 1))) from -= 1;
      out += String((ch.codePointAt(0) - from) % 10);
    }
  }
  return out;
}

// -- adding an account ---------------------------------------------------------------

function openAddView() {
  showAgain(null);
  showError("add-error", null);
  endFileImport();
  $("add-status").textContent = "";
  $("add-report").replaceChildren();
  show("add");
}

// A service's page on this same phone cannot have its QR code scanned: it links here
// with its setup link in the address's fragment (#enroll=LINK, docs/protocol.md section
// 11), which no request carries to a server. The link is taken out of the address at
// once (no history entry or bookmark keeps it) and put in the Add form; nothing is
// added before the person taps Add, so a page cannot add accounts by linking here.
function takeLinkFromAddress() {
  const prefix = "#enroll=";
  if (!location.hash.startsWith(prefix)) return;
  const encoded = location.hash.slice(prefix.length);
  history.replaceState(null, "", location.pathname + location.search);
  let linkText;
  try {
    linkText = decodeURIComponent(encoded);
  } catch {
    return;
  }
  openAddView();
  $("link").value = linkText;
  let service = "";
  try {
    const link = parseEnrollmentUri(linkText);
    service = ` from ${printable(link.rp_name)} for ${printable(link.account)}`;
  } catch {
    // Said by Add, in the form's words, when tapped.
  }
  $("add-status").textContent = `A page opened this app with a setup link${service}. Tap Add if you are setting it up now.`;
}

// The Add account screen takes a service's setup link (push sign-in, maybe with codes),
// any service's verification-code link and Google Authenticator's export, pasted or
// scanned; the last two load their readers only when used.
function addFromText(input) {
  if (addingLink) return; // one setup at a time: the button says it is busy (aria-disabled)
  showError("add-error", null);
  $("add-status").textContent = "";
  $("add-report").replaceChildren();
  if (!input.trim()) return showError("add-error", "Paste the setup link from the service's security page, or scan its QR code.", "link");
  const scheme = unwrap(input).trim().split(":")[0].toLowerCase(); // a wrapped link read as one
  if (scheme === "otpauth") return addCodes(input);
  if (scheme === "otpauth-migration") return importExport(input);
  return addAccount(input);
}

// An account being added: Add is aria-disabled, not disabled, which dropped the focus on
// <body>, so that after "Could not add the account" Tab started over at the top.
let addingLink = false;
let addingAt = null; // the server whose connection that add enrolls on

// The setup link waiting for an answer to "add it again?" (null: no question shown).
let againLink = null;

// The question replaces the form (and the scanner) until it is answered; the focus goes
// to its heading, as it goes to the heading of each screen that appears.
function showAgain(question) {
  againLink = question?.linkText ?? null;
  $("again").hidden = !question;
  $("add-form").hidden = !!question;
  $("import-box").hidden = !!question;
  $("scan").hidden = !!question || !scanSupported();
  if (!question) return;
  stopScan();
  const { link, twin } = question;
  const shown = twin.name !== link.account ? ` (shown here as "${twin.name}")` : "";
  $("again-title").textContent = printable(`${link.account} is on this phone already`);
  $("again-text").textContent = printable(
    `This phone already has ${link.account} at ${link.rp_name}${shown}. Add it again as a second sign-in method? The service will list two devices for you.`,
  );
  $("again-title").focus();
}

function answerAgain(add) {
  const linkText = againLink;
  showAgain(null);
  if (add) {
    $("add-title").focus(); // not lost with the button that goes
    return addAccount(linkText, { again: true });
  }
  $("link").value = "";
  toast("Nothing was added.");
  show("home");
}

// The account of this phone that a setup link would add a second time (same server, same
// service, same account), or undefined. A restored account waiting for a new QR code is
// no second one: the link re-activates it in place.
const sameAccount = (link) =>
  accountsCache.find((a) => hasKey(a) && a.broker === link.broker && a.rp === link.rp && a.label === link.account);

async function addAccount(linkText, { again = false } = {}) {
  let link;
  try {
    link = parseEnrollmentUri(linkText);
  } catch (exc) {
    // The protocol module's words name the link's kind; people know it as a setup link.
    const why = exc.message.replace(/^not a valid enrollment link: /, "");
    return showError(
      "add-error",
      `This is not a setup link this app can read (${printable(why)}). Copy the whole link from the service's security page, or scan its QR code. Nothing was added.`,
    );
  }
  const insecure = insecureTransport(link.broker);
  if (insecure) return showError("add-error", insecure);
  const deviceName = $("device-name").value.trim() || defaultDeviceName();
  if ([...deviceName].length > 64 || hasUnsafe(deviceName))
    return showError("add-error", "The phone's name must be 1 to 64 characters without control or invisible characters.", "device-name");
  // The same account again (a second setup link from the service): asked, as other
  // authenticators ask, before anything is sent.
  const twin = sameAccount(link);
  if (twin && !again) return showAgain({ linkText, link, twin });
  addingLink = true;
  addingAt = link.broker;
  $("add-submit").setAttribute("aria-disabled", "true");
  try {
    const keyPair = await newKeyPair();
    // The service enrolls the account as recoverable: it gets a recovery key too.
    const recovery = link.recoverable ? await newRecoveryKey() : null;
    const conn = connectionFor(link.broker);
    const enrolled = await conn.enroll(link, keyPair, deviceName, recovery?.publicKey ?? null);
    // Set before anything else awaits: the test request may be the very next frame.
    const added = storing(enrolled.cid);
    try {
      await keepEnrolled(link, enrolled, { conn, keyPair, recovery, deviceName });
    } finally {
      added();
    }
    $("link").value = "";
    await refreshAccounts();
    toast(`Added ${link.account} at ${link.rp_name}. Approve the test request that follows.`);
    show("home");
  } catch (exc) {
    const code = exc instanceof ReplyError ? exc.code : "";
    const why =
      code === "bad_token"
        ? "this setup link was already used, withdrawn by the service or has expired; get a new one from the service"
        : code === "too_many_credentials"
          ? `${link.rp_name} allows no more devices for this account. Remove one you no longer use on its security page, then add this link again while it is valid`
          : ["offline", "timeout"].includes(code)
            ? `${exc.message} (${link.broker}). Check this phone's connection and try again; nothing was added`
            : exc.message;
    showError("add-error", `Could not add the account: ${printable(why)}`);
    // A server that no account here uses: no connection is kept trying it.
    const conn = connections.get(link.broker);
    if (conn && !(await accountsAt(link.broker)).length) {
      conn.stop();
      connections.delete(link.broker);
      renderConn();
    }
  } finally {
    addingLink = false;
    addingAt = null;
    $("add-submit").removeAttribute("aria-disabled");
  }
}

// Accounts enrolled but not yet stored, by cid. The RP sends its test request as soon as
// the broker reports the enrollment, so the request can arrive while the new account is
// still being sealed and written (slow on a busy phone): it waits for that, rather than
// be dropped as not ours and never shown.
const adding = new Map(); // cid -> Promise resolved once the add is over (stored or not)

function storing(cid) {
  let done;
  adding.set(cid, new Promise((resolve) => (done = resolve)));
  return () => (adding.delete(cid), done());
}

// The account of a credential, waiting for it if it is being added.
async function accountOf(cid) {
  const account = await db.getAccount(cid);
  if (account || !adding.has(cid)) return account;
  await adding.get(cid);
  return db.getAccount(cid);
}

// Keep what `enroll` made: the account (replacing a restored one waiting for this QR code).
async function keepEnrolled(link, enrolled, { conn, keyPair, recovery, deviceName }) {
  if (enrolled.rp !== link.rp) {
    await conn.revoke(enrolled.cid).catch(() => null);
    throw new Error(`the server enrolled this phone at another service (${enrolled.rp}); nothing was kept`);
  }
  // A restored account waiting for this new QR code is replaced, keeping its name and place.
  const waiting = accountsCache.find(
    (a) => a.actionRequired && a.broker === link.broker && a.rp === link.rp && a.user === enrolled.user,
  );
  if (waiting) await forget(waiting.cid);
  const order = waiting ? waiting.order : nextOrder();
  await db.putAccount({
    cid: enrolled.cid,
    broker: link.broker,
    rp: link.rp,
    rp_name: link.rp_name,
    user: enrolled.user,
    label: link.account,
    name: waiting ? waiting.name : uniqueName(link.account),
    deviceName,
    privateKey: keyPair.privateKey,
    publicKey: keyPair.publicKey,
    totp: await sealedTotp(enrolled.cid, link.totp),
    recovery: recovery && { publicKey: recovery.publicKey, seed: await sealed.seal(recovery.seed, `recovery:${enrolled.cid}`) },
    uvCredential: null,
    added: Date.now(),
    order,
  });
  await db.putSetting("deviceName", deviceName);
  setupPush(conn); // the new account is woken by push too, if it is on
}

const nextOrder = () => (accountsCache.length ? Math.max(...accountsCache.map((a) => a.order)) + 1 : 0);

// -- verification-code accounts (js/otp.js, js/migration.js) ---------------------------

// The codes this app makes now, as accounts js/otp.js can compare ({name, otp}).
async function heldCodes(otp) {
  const held = [];
  for (const account of accountsCache.filter((a) => a.totp)) {
    const { kind = "totp", secret, algorithm, digits, period } = await totpParams(account);
    held.push({ name: account.name, otp: { kind, secret: otp.decodeSecret(secret), algorithm, digits, period } });
  }
  return held;
}

// Why this app will not add `account` (null when it will): what the agent would refuse
// as a name in its list (a backup must restore there) or as a secret (under 80 bits,
// as the agent's import and add refuse it), a counter this app cannot keep
// exactly (past 2^53), or an account that makes the codes of one it holds.
function codesRefusal(otp, account, held) {
  if (account.counter > BigInt(Number.MAX_SAFE_INTEGER)) return "its counter is too large for this app";
  const problem = otp.nameProblem(otp.labelOf(account)) ?? otp.secretProblem(account.secret);
  if (problem) return problem;
  const twin = held.find((h) => otp.sameCodes(h.otp, account));
  return twin ? `it is here already as "${twin.name}"` : null;
}

// A codes-only account (no key: nothing to approve), as a restore makes one.
async function putCodesAccount({ name, label, issuer, totp }, order, deviceName) {
  const cid = `codes:${crypto.randomUUID()}`;
  await db.putAccount({
    cid,
    name,
    order,
    broker: null,
    rp: null,
    rp_name: issuer,
    user: null,
    label,
    deviceName,
    added: Date.now(),
    uvCredential: null,
    privateKey: null,
    publicKey: null,
    recovery: null,
    totp: await sealedTotp(cid, totp),
  });
  return cid;
}

// Adds each of `accounts` this app can hold; returns a line per account, for people.
async function addCodeAccounts(otp, accounts) {
  const held = await heldCodes(otp);
  const taken = new Set(accountsCache.map((a) => a.name));
  const deviceName = (await db.getSetting("deviceName")) ?? "";
  let order = nextOrder();
  const lines = [];
  for (const account of accounts) {
    const why = codesRefusal(otp, account, held);
    if (why) {
      lines.push({ added: false, text: `${otp.labelOf(account)}: not added, ${why}` });
      continue;
    }
    const name = uniqueName(otp.labelOf(account), taken);
    taken.add(name);
    held.push({ name, otp: account });
    const totp = totpOf({ ...account, secret: base32Encode(account.secret), counter: Number(account.counter) });
    await putCodesAccount({ name, label: account.name, issuer: account.issuer, totp }, order++, deviceName);
    lines.push({ added: true, name, text: `added: ${name}` });
  }
  if (lines.some((l) => l.added)) await refreshAccounts();
  return lines;
}

async function addCodes(input) {
  const otp = await import("./otp.js");
  let account;
  try {
    account = otp.parseOtpauth(input);
  } catch (exc) {
    if (!(exc instanceof otp.OtpError)) throw exc;
    return showError("add-error", `Could not add the account: ${printable(exc.message)}. Nothing was added.`);
  }
  const [line] = await addCodeAccounts(otp, [account]);
  if (!line.added) return showError("add-error", `${printable(line.text)}. Nothing was added.`);
  $("link").value = "";
  toast(`Added ${line.name}: its verification codes are on the home screen.`);
  show("home");
}

// One QR code of a Google Authenticator export: every account this app can hold is
// added; the others, and the export's QR codes still to scan, are said by name.
async function importExport(input) {
  const [otp, mig] = await Promise.all([import("./otp.js"), import("./migration.js")]);
  let batch;
  try {
    batch = mig.parseMigration(input);
  } catch (exc) {
    if (!(exc instanceof otp.OtpError)) throw exc;
    return showError("add-error", `Could not read the export: ${printable(exc.message)}. Nothing was added.`);
  }
  const lines = await addCodeAccounts(otp, batch.accounts);
  lines.push(...batch.refused.map((r) => ({ added: false, text: `${r.label}: not added, ${r.reason}` })));
  const added = lines.filter((l) => l.added).length;
  const more = batch.batchSize > 1 ? ` This was QR code ${batch.batchIndex + 1} of ${batch.batchSize} of the export: scan the others too.` : "";
  $("add-status").textContent = `${added} of ${counted(lines.length, "account")} added.${more}`;
  $("add-report").replaceChildren(...lines.map((l) => text("li", printable(l.text))));
  $("link").value = "";
}

// -- another app's export file (js/importers/, loaded when a file is chosen) -------------

// The chosen file ({name, data}) while its password is asked; null otherwise. Its bytes
// and the password stay in this page: nothing is sent, stored or logged.
let importFile = null;
let importBusy = false;

function endFileImport() {
  importFile = null;
  $("import-file").value = "";
  $("import-password").value = "";
  $("import-password-form").hidden = true;
  showError("import-error", null);
}

async function chooseImportFile() {
  const file = $("import-file").files[0];
  endFileImport();
  if (!file) return;
  showError("add-error", null);
  $("add-report").replaceChildren();
  // A picture (a screenshot of a service's QR code, or of another app's export code):
  // its code is read as the camera reads one, and added as a pasted link is.
  if (file.type.startsWith("image/")) return addFromImage(file);
  const sources = await import("./importers/sources.js");
  // Refused before it is read: a file this large is no export (as the agent's limit).
  if (file.size > sources.MAX_SOURCE_BYTES) return importFailed(file.name, "the file is too large for an account export");
  importFile = { name: file.name, data: new Uint8Array(await file.arrayBuffer()) };
  return openImportFile(null);
}

async function addFromImage(file) {
  let link;
  try {
    link = await scanImage(file);
  } catch {
    return importFailed(file.name, "the picture cannot be opened (damaged, or a kind this browser cannot show)");
  }
  if (!link) return importFailed(file.name, "no QR code of an account was found in it: choose a screenshot, or a sharp photo, of the whole code");
  $("link").value = link;
  return addFromText(link);
}

function importFailed(name, why) {
  endFileImport();
  $("add-status").textContent = "";
  showError("import-error", printable(`Could not import ${name}: ${why}. Nothing was added.`), "import-file");
}

// Reads the chosen file (with `password` once asked for one) and adds every account this
// app can hold; the others are said by name with the reason, as from a pasted export.
async function openImportFile(password) {
  if (!importFile || importBusy) return;
  const { name, data } = importFile;
  const [otp, sources] = await Promise.all([import("./otp.js"), import("./importers/sources.js")]);
  importBusy = true;
  $("add-status").textContent = printable(`Reading ${name}…`);
  let parsed;
  try {
    parsed = await sources.parseFile(data, password);
  } catch (exc) {
    if (!(exc instanceof otp.OtpError)) throw exc;
    if (exc.code === "password_required" || exc.code === "wrong_password") {
      // The file stays chosen: the password is asked (again) beside it.
      const asked = exc.code === "password_required";
      $("add-status").textContent = asked ? printable(`${name}: ${exc.message}.`) : "";
      showError("import-error", asked ? null : printable(`${name}: ${exc.message}. Nothing was added.`), asked ? null : "import-password");
      $("import-password-form").hidden = false;
      $("import-password").focus();
      if (!asked) $("import-password").select();
      return;
    }
    return importFailed(name, exc.message);
  } finally {
    importBusy = false;
  }
  endFileImport();
  const lines = await addCodeAccounts(otp, parsed.accounts);
  lines.push(...parsed.refused.map((r) => ({ added: false, text: `${r.label}: not added, ${r.reason}` })));
  const added = lines.filter((l) => l.added).length;
  const notes = parsed.notes.map((n) => ` ${n}.`).join("");
  $("add-status").textContent = printable(`${added} of ${counted(lines.length, "account")} added from ${name}.${notes}`);
  $("add-report").replaceChildren(...lines.map((l) => text("li", printable(l.text))));
}

// A backup names each account once (both readers refuse a name twice), and one address
// at two services is common: `wanted`, or `wanted (2)`, `wanted (3)`... whichever is
// free, as the agent's store.unique_name does.
function uniqueName(wanted, taken = new Set(accountsCache.map((a) => a.name))) {
  if (!taken.has(wanted)) return wanted;
  let n = 2;
  while (taken.has(`${wanted} (${n})`)) n++;
  return `${wanted} (${n})`;
}

// Earlier versions of the app gave two accounts one name: the later one is renamed.
async function uniqueNames() {
  const taken = new Set();
  for (const account of await db.listAccounts()) {
    const name = uniqueName(account.name, taken);
    taken.add(name);
    if (name !== account.name) await db.putAccount({ ...account, name });
  }
}

// -- managing an account -----------------------------------------------------------

async function openManage(cid) {
  const account = await db.getAccount(cid);
  if (!account) return;
  openAccount = cid;
  // A codes-only account (from an otpauth:// link, an export or a backup) has no
  // sign-in requests, so no device name or recovery key to speak of.
  const push = account.broker
    ? [
        ["This phone", account.deviceName],
        ["Added", new Date(account.added).toLocaleString()],
        ["Recovery key", account.recovery ? "kept on this phone and in its backups" : "none"],
      ]
    : [
        ["Added", new Date(account.added).toLocaleString()],
        ["Sign-in requests", "none: verification codes only"],
      ];
  fillDetails($("account-details"), [
    ["Service", account.rp_name],
    ["Account", account.label],
    ...push,
    ...(account.actionRequired ? [["Status", actionText(account)]] : []),
  ]);
  $("rename").value = account.name;
  renderMoves();
  $("uv").checked = !!account.uvCredential;
  $("uv").disabled = !webauthn.available() || !hasKey(account); // nothing to approve without a key
  showError("account-error", null);
  show("account");
}

async function rename(event) {
  event.preventDefault();
  const name = $("rename").value.trim();
  if (!name || [...name].length > 64 || hasUnsafe(name))
    return showError("account-error", "A name is 1 to 64 characters without control or invisible characters.");
  if (accountsCache.some((a) => a.name === name && a.cid !== openAccount))
    return showError("account-error", `There is already an account named "${printable(name)}"; choose another name.`);
  const account = await db.getAccount(openAccount);
  if (!account) return show("home"); // removed meanwhile (in another tab)
  await db.putAccount({ ...account, name });
  await refreshAccounts();
  toast("Renamed");
  show("home");
}

// The list's order is the user's: swap with the neighbour above (-1) or below (+1).
async function move(step) {
  const at = accountsCache.findIndex((a) => a.cid === openAccount);
  const to = at + step;
  if (at < 0 || to < 0 || to >= accountsCache.length) return;
  const order = accountsCache.map((a) => a.cid);
  [order[at], order[to]] = [order[to], order[at]];
  for (const [i, cid] of order.entries()) {
    const account = await db.getAccount(cid);
    if (account.order !== i) await db.putAccount({ ...account, order: i });
  }
  await refreshAccounts();
  toast(step < 0 ? "Moved up" : "Moved down");
}

// Only the moves that do something are offered: none for the only account, no "Move up"
// for the first, no "Move down" for the last. A move button that the focus was on and
// that does nothing now hands the focus to the other one (or to the screen's heading).
function renderMoves() {
  const at = accountsCache.findIndex((a) => a.cid === openAccount);
  const focused = document.activeElement;
  $("move-up").disabled = at <= 0;
  $("move-down").disabled = at < 0 || at >= accountsCache.length - 1;
  if (!["move-up", "move-down"].includes(focused?.id) || !focused.disabled) return;
  const other = $(focused.id === "move-up" ? "move-down" : "move-up");
  (other.disabled ? $("account-title") : other).focus();
}

async function toggleUv() {
  const account = await db.getAccount(openAccount);
  if (!account) return show("home"); // removed meanwhile (in another tab)
  showError("account-error", null);
  if (!$("uv").checked) {
    await db.putAccount({ ...account, uvCredential: null });
    return toast("Approving no longer asks for the screen lock");
  }
  try {
    const id = await webauthn.register(account.label);
    await db.putAccount({ ...account, uvCredential: id });
    toast("Approving now asks for the screen lock");
  } catch (exc) {
    $("uv").checked = false;
    showError("account-error", `This phone's screen lock could not be set up: ${printable(exc.message)}`);
  }
}

async function remove() {
  const account = await db.getAccount(openAccount);
  if (!account) return show("home");
  const what = hasKey(account)
    ? `Sign-in requests of ${account.rp_name} will no longer reach this phone.`
    : "Its verification codes will be gone from this phone.";
  if (!confirm(`Remove ${account.name}? ${what}`)) return;
  try {
    // Revoked at the broker first (as the Python agent does): then the key is useless anywhere.
    // (An account without a key on this phone has nothing to revoke from here.)
    if (hasKey(account)) await connectionFor(account.broker).revoke(account.cid);
  } catch (exc) {
    if (!(exc instanceof ReplyError && ["credential_revoked", "unknown_credential"].includes(exc.code)))
      return showError("account-error", `Could not reach the server to remove it: ${printable(exc.message)}. Nothing was removed.`);
  }
  await forget(account.cid);
  toast(`${account.name} ${REMOVALS.removed_by_device}`);
  show("home");
}

async function forget(cid) {
  await db.deleteAccount(cid);
  await dropped(cid);
}

// A key the server does not know was removed by nobody: the service erased the account
// there, or the server's data was restored from a copy older than this phone's setup
// (docs/operations.md, "Restoring from an older backup"). The service drops this phone
// too once it compares its list with the server's, so its codes go; the account stays,
// waiting for a new QR code, which replaces it in place (keepEnrolled), as the agent
// keeps it revoked until `enroll` replaces it.
async function keepUnknown(account) {
  const { cid } = account;
  await db.putAccount({ ...account, privateKey: null, publicKey: null, uvCredential: null, recovery: null, totp: null, actionRequired: true, unknownKey: true });
  await dropped(cid);
}

// What this phone holds about a credential besides its account: gone with its key.
async function dropped(cid) {
  prompts.dropCredential(cid);
  codeParams.delete(cid);
  for (const [id, n] of notices) if (n.frame.cid === cid) notices.delete(id);
  await refreshAccounts();
  // Its Manage screen, open when the service removed it, goes home: left open, its Rename,
  // Move and screen-lock buttons acted on an account that is no longer there (nothing
  // happened). An account kept waiting for a new QR code (keepUnknown) is shown anew.
  if (view === "account" && openAccount === cid) {
    if (accountsCache.some((a) => a.cid === cid)) await openManage(cid);
    else show("home");
  }
  // A server that holds none of this phone's accounts now wakes it for nothing: no word
  // about its notifications (as before the first account was added there).
  const brokers = new Set(accountsCache.filter(hasKey).map((a) => a.broker));
  for (const broker of [...pushState.keys()]) if (!brokers.has(broker)) pushState.delete(broker);
  renderPush();
  // Nor is its connection kept open (the server would hold it for nothing) or reconnected:
  // closed normally (docs/protocol.md section 15); adding an account there opens a new one.
  for (const [broker, conn] of [...connections])
    if (!brokers.has(broker) && broker !== addingAt) {
      conn.stop();
      connections.delete(broker);
    }
  renderConn();
}

// -- "was this you?" after a recovery (docs/protocol.md section 5 recovery_notice) -----

function currentNotice() {
  // The oldest first: they come in the order the recoveries happened.
  let oldest = null;
  for (const n of notices.values()) if (!oldest || n.frame.time < oldest.frame.time) oldest = n;
  return oldest;
}

function renderNotice(n) {
  const { frame, connection } = n;
  const section = $("notice");
  const account = accountsCache.find((a) => a.cid === frame.cid);
  const when = new Date(frame.time - connection.offsetMs).toLocaleString();
  const name = account ? account.name : frame.cid;
  $("notice-text").textContent = printable(
    `A new device ('${frame.new_name}') was added to ${name} by recovery on ${when}. Was this you?`,
  );
  fillDetails($("notice-details"), [
    ["Service", account?.rp_name ?? ""],
    ["Account", account?.label ?? frame.cid],
    ["New device", frame.new_name],
    ["Added", when],
  ]);
  $("notice-more").hidden = notices.size < 2;
  $("notice-more").textContent = moreWaiting(notices.size - 1, "recovery question");
  if (section.dataset.notice !== frame.notice) {
    section.dataset.notice = frame.notice;
    showError("notice-error", null);
    setNoticeBusy(false);
  }
}

function setNoticeBusy(busy) {
  for (const id of ["notice-yes", "notice-no"]) $(id).disabled = busy;
}

// "Yes" dismisses the question; "No" (disown) makes the broker revoke the new device's
// key and pause push for the user as a fraud report does, and the service is told.
async function answerNotice(decision) {
  const n = currentNotice();
  if (!n) return;
  const account = await db.getAccount(n.frame.cid);
  if (!account) return;
  setNoticeBusy(true);
  showError("notice-error", null);
  try {
    const result = await n.connection.answerNotice(n.frame, account.privateKey, decision);
    notices.delete(n.frame.notice);
    // The recovery used this account's recovery key up (a recovery key works once).
    const wasRecoverable = Boolean(account.recovery);
    if (wasRecoverable) await db.putAccount({ ...account, recovery: null });
    const said = NOTICE_OUTCOMES[result.outcome] ?? `The recovery question was closed (${printable(result.outcome)}).`;
    // After a "no", the renewal stops the automatic copy before the list is refreshed.
    // After a "yes", only this account gets a new key, so that this phone's backups
    // (the automatic copy too, at the refresh below) bring it back by themselves again,
    // as the agent does.
    let renewed = null;
    if (result.outcome === "disowned") renewed = await retireBackups(account.cid);
    else if (result.outcome === "confirmed" && wasRecoverable) {
      const failed = await renewRecoveryKey(await db.getAccount(account.cid), n.frame);
      renewed = failed ? `Not done: ${failed}; Retire older backups does it later.` : null;
    }
    await refreshAccounts(); // (and the automatic server copy, which held the spent key)
    toast(renewed ? `${said} ${renewed}` : said);
  } catch (exc) {
    const code = exc instanceof ReplyError ? exc.code : "";
    if (["unknown_notice", "credential_revoked", "unknown_credential"].includes(code)) {
      notices.delete(n.frame.notice);
      toast("This recovery question was already closed.");
    } else {
      showError("notice-error", `Could not send the answer: ${printable(exc.message)}`);
    }
  } finally {
    setNoticeBusy(false);
    render();
  }
}

// After "No, it wasn't me" (whoever restored a backup of this phone holds its passphrase,
// maybe its backup code too) and on "Retire older backups" (one was lost, or its
// passphrase may be known), old backups must recover nothing more (docs/protocol.md
// section 16, "Renewal"; as the agent does): every recoverable account gets a new
// recovery key (the old ones in any backup are refused from now on), the server copies
// are deleted and the next one gets a new backup code. What is left undone is said.
// `answeredCid`: the account whose recovery key the disowned recovery used up.
const OLD_CODES_STILL_WORK =
  "Verification codes in older backups still work, for whoever has one: to end those, remove each account with codes at its service and add it again.";

async function retireBackups(answeredCid = null) {
  // Automatic copies stop first, and one under way ends before anything is renewed, so
  // that no copy under the known code and keys is written again with the new keys in it.
  await db.putSetting(AUTO_SETTING, null);
  await autoRunning;
  const failed = [];
  for (const account of await db.listAccounts()) {
    if (!hasKey(account) || !(account.recovery || account.cid === answeredCid)) continue;
    const why = await renewRecoveryKey(account);
    if (why) failed.push(why);
  }
  const kept = [];
  for (const copy of (await db.getSetting(COPIES_SETTING)) ?? []) {
    try {
      await brokerHttp.deleteBlob(copy.broker, await sealed.open(copy.seed, `server-copy:${copy.broker}`));
    } catch (exc) {
      kept.push(copy);
      failed.push(`the copy on ${brokerHttp.httpBase(copy.broker)} was not deleted (${exc.message})`);
    }
  }
  await db.putSetting(COPIES_SETTING, kept);
  await db.putSetting(CODE_SETTING, null);
  renderAutoStatus();
  let done = "Older backups of this phone recover nothing now: make a new one (Back up or restore), which gets a new backup code.";
  // A verification-code secret is the service's: no new key here ends what an older
  // backup holds (as the agent says, device_agent/backup_actions.py OLD_CODES_STILL_WORK).
  if ((await db.listAccounts()).some((a) => a.totp)) done += ` ${OLD_CODES_STILL_WORK}`;
  return failed.length ? `${done} Not done: ${failed.join("; ")}.` : done;
}

// A phone clock further than this off the server's is named as wrong: the skew an RP
// accepts on an answer's ts (as device_agent/broker_clock.py WARN_AFTER_MS).
const CLOCK_WARN_MS = 120_000;

// A new recovery key for one account (docs/protocol.md section 16, "Renewal"), signed
// by its credential: null when done, else what went wrong, in words. `notice`: the
// recovery_notice of a recovery from it, which the new key must be dated after.
async function renewRecoveryKey(account, notice = null) {
  const ts = rotationTs(Date.now(), notice?.recovery_ts ?? null);
  if (ts === null) {
    const newAhead = notice.recovery_ts - notice.time; // the new device's clock minus the broker's
    const which = newAhead > CLOCK_WARN_MS
      ? `the new device's clock was ${Math.round(newAhead / 60_000)} min ahead when it restored: set it right`
      : "this phone's clock is behind: set it right";
    return `${account.name}'s recovery key was not renewed: the restore is dated more than 10 min after this phone's clock (${which}, then Retire older backups)`;
  }
  try {
    const fresh = await newRecoveryKey();
    const taken = await nameRecoveryKey(account, fresh.publicKey, ts);
    const recovery = taken ? { publicKey: fresh.publicKey, seed: await sealed.seal(fresh.seed, `recovery:${account.cid}`) } : null;
    await db.putAccount({ ...(await db.getAccount(account.cid)), recovery });
    return null;
  } catch (exc) {
    if (exc.wrongClock) return `${account.name}'s recovery key was not renewed: ${exc.message}`;
    return `${account.name}'s recovery key was not renewed (${exc.message})`;
  }
}

// brokerHttp.setRecoveryKey for `account`, dated `ts`. A refusal as not newer than what
// the server holds (a restore of this account on a device whose clock was ahead of this
// phone's, or this phone's own last new key dated after such a restore) is tried once
// more just after it, as after a recovery notice (rotationTs: at most 10 min ahead of
// this phone's clock; the server's word moves it no further); past that a clock is
// wrong, and the error (`wrongClock`) says which, as the agent does
// (device_agent/recovery_keys.py _name_key).
async function nameRecoveryKey(account, publicKey, ts) {
  const name = (at) => brokerHttp.setRecoveryKey(account.broker, account.cid, account.privateKey, publicKey, at);
  let newerThan;
  try {
    return await name(ts);
  } catch (exc) {
    if (exc.newerThan === undefined) throw exc;
    newerThan = exc.newerThan;
  }
  const retry = rotationTs(Date.now(), newerThan);
  if (retry !== null && retry > ts) {
    try {
      return await name(retry);
    } catch (exc) {
      if (exc.newerThan === undefined) throw exc;
      newerThan = exc.newerThan;
    }
  }
  const when = new Date(newerThan).toLocaleString();
  const offset = connections.get(account.broker)?.offsetMs ?? 0; // the server's clock minus this phone's
  const which = offset > CLOCK_WARN_MS
    ? `this phone's clock is ${Math.round(offset / 60_000)} min behind the server's: set it right`
    : `if this phone's clock is right, the device that restored this account had a clock ahead: wait until ${when}`;
  throw Object.assign(
    new Error(`the server takes a new one only if dated after ${when} (this account was restored on another device, or got its last new key, then), more than 10 min after this phone's clock (${which}, then Retire older backups)`),
    { wrongClock: true },
  );
}

// A button disabled while its work runs drops the keyboard focus on <body>: Tab then
// starts over at the top of a long screen, and a screen reader loses its place. Back from
// the work, the focus returns to `el` unless the user put it elsewhere meanwhile.
function refocus(el) {
  if (el && (!document.activeElement || document.activeElement === document.body)) el.focus();
}

async function retireOlderBackups() {
  const what = "Retire older backups? Older backups will no longer set up sign-in requests on another device, and this phone's copies on the server are deleted. Make a new backup afterwards.";
  if (!confirm(what)) return;
  $("backup-retire").disabled = true;
  $("backup-code").hidden = true;
  $("backup-status").textContent = "Retiring older backups…";
  try {
    const said = await retireBackups();
    await refreshAccounts();
    $("backup-status").textContent = said;
  } finally {
    $("backup-retire").disabled = false;
    refocus($("backup-retire"));
  }
}

// -- backup and restore (docs/backup-format.md; deploy/webapp.md) ---------------------
// The format and its crypto load only when used (js/backup.js, js/sealedfile.js).

const MAX_BACKUP_FILE = 64 * 1024 ** 2 + 4096;
// Recovery answers after which the backup's recovery key is of no more use.
const SPENT = new Set(["recovery_key_used", "credential_revoked", "recovery_refused"]);

const actionText = (account) =>
  account.unknownKey
    ? `Action required: the server no longer knows this phone's key. Add this phone again on ${account.rp_name}'s security page and scan the new QR code here.`
    : `Action required: scan a new QR code from ${account.rp_name}'s security page.`;
// The toast when the server says it does not know an account's key (keepUnknown).
const unknownText = (account) =>
  `was removed: the server has no record of this phone's key (its data may have been restored from an older copy, or ${account.rp_name} erased your account there). To use it again, add this phone again on ${account.rp_name}'s security page and scan the new QR code here: it replaces this account.`;
// An account's code generator as stored and backed up: time-based, or counter-based
// with the next counter to use.
const totpOf = ({ kind = "totp", secret, algorithm, digits, period, counter }) =>
  kind === "hotp" ? { kind, secret, algorithm, digits, counter } : { secret, algorithm, digits, period };
const isHotp = (account) => account.totp?.kind === "hotp";

const CODE_SETTING = "backupCode"; // the backup code of server copies, sealed
// This phone's server copies, [{broker, seed (sealed)}]: what a "No, it wasn't me" deletes.
// The seed opens nothing by itself (the copy also needs the passphrase and the code).
const COPIES_SETTING = "serverCopies";
// Automatic server copies: {broker, salt, kdf, fileKey, seed, wrap (the last three
// sealed), last (digest of the last copy's content), stored (SHA-256 of the bytes last
// uploaded: checkAutoCopy), at}. The derived keys, not the
// passphrase: they open only this phone's own copies, whose content the phone holds.
const AUTO_SETTING = "autoBackup";

// The brokers this phone's push accounts are at: where a server copy can go.
const backupBrokers = () => [...new Set(accountsCache.filter((a) => a.broker).map((a) => a.broker))];

function openBackupView() {
  for (const id of ["backup-error", "restore-error"]) showError(id, null);
  hideExport();
  $("restore-report").replaceChildren();
  $("backup-status").textContent = "";
  $("backup-code").hidden = true;
  $("restore-device-name").value = $("device-name").value;
  renderBackupTargets();
  renderAutoStatus();
  show("backup");
}

// Where the automatic copy stands, on the Backup screen and under the home screen's list
// (`data-digest` names the copy's content: it changes with each new copy).
async function renderAutoStatus() {
  const auto = await db.getSetting(AUTO_SETTING);
  for (const id of ["backup-auto-status", "auto-note"]) $(id).hidden = !auto;
  if (!auto) return $("auto-note").removeAttribute("data-digest");
  const when = new Date(auto.at).toLocaleString();
  $("backup-auto-status").textContent = `The copy on ${brokerHttp.httpBase(auto.broker)} is kept up to date after each change; last updated ${when}.`;
  $("auto-note").textContent = `Backup on the server up to date (${when}).`;
  $("auto-note").dataset.digest = auto.last;
}

function renderBackupTargets() {
  const brokers = backupBrokers();
  $("backup-broker").replaceChildren(...brokers.map((b) => Object.assign(document.createElement("option"), { value: b, textContent: b })));
  $("backup-broker-row").hidden = brokers.length < 2;
  $("backup-server").disabled = brokers.length === 0;
}

async function storedCode() {
  const box = await db.getSetting(CODE_SETTING);
  return box ? sealed.open(box, "backup-code") : null;
}

// Argon2id takes a second or more on a phone: say that something happens.
const progress = (what) => (fraction) => ($("backup-status").textContent = `${what}… ${Math.round(fraction * 100)} %`);

// Each account as a backup line (js/backup.js), its secrets unsealed for the file.
async function backupLines() {
  const lines = [];
  for (const account of await db.listAccounts()) {
    const params = account.totp ? await totpParams(account) : null;
    const recoverySeed = account.recovery ? await sealed.open(account.recovery.seed, `recovery:${account.cid}`) : null;
    lines.push({
      name: account.name,
      otp: params && { ...totpOf(params), label: account.label, issuer: account.rp_name },
      push: account.broker && {
        rp: account.rp,
        rp_name: account.rp_name,
        user: account.user,
        label: account.label,
        broker: account.broker,
        cid: account.cid,
        device_name: account.deviceName,
        added: account.added,
        recovery_seed: recoverySeed,
      },
    });
  }
  return lines;
}

function download(bytes, name) {
  const url = URL.createObjectURL(new Blob([bytes], { type: "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

// A save empties the passphrase fields (the passphrase is not kept on screen): the next
// save, to the server after a file say, asks for it again in those words, where it said
// "too short (0 characters)" of the passphrase just typed.
let backupSaved = false;

async function writeBackup(event) {
  event.preventDefault();
  showError("backup-error", null);
  $("backup-code").hidden = true;
  const toServer = event.submitter?.id === "backup-server";
  const passphrase = $("backup-pass").value;
  const format = await import("./backup.js");
  if (!accountsCache.length) return showError("backup-error", "There are no accounts to back up yet.");
  if (!passphrase)
    return showError(
      "backup-error",
      backupSaved
        ? "Type the passphrase again, in both fields: they are emptied after each backup."
        : "Type a passphrase for the backup, in both fields.",
      "backup-pass",
    );
  const problem = await format.passphraseProblem(passphrase);
  if (problem) return showError("backup-error", problem, "backup-pass");
  if (passphrase !== $("backup-pass2").value) return showError("backup-error", "The two passphrases differ.", "backup-pass2");
  const broker = backupBrokers().length === 1 ? backupBrokers()[0] : $("backup-broker").value;
  if (toServer && !broker) return showError("backup-error", "None of these accounts is at a server that keeps backups.");
  for (const id of ["backup-submit", "backup-server"]) $(id).disabled = true;
  try {
    const doc = format.backupDocument(await backupLines(), (await db.getSetting("deviceName")) ?? "");
    const sk = await format.backupKey(passphrase, { onProgress: progress("Encrypting the backup") });
    const data = format.sealBackupWith(doc, sk);
    const count = `Backup of ${counted(doc.settings.layout.length, "account")}`;
    if (!toServer) {
      download(data, `pushauth-${new Date().toISOString().slice(0, 10)}.backup`);
      $("backup-status").textContent = `${count} saved as a file. Keep it apart from this phone, and the passphrase apart from the file.`;
    } else {
      const blob = await import("./blobkeys.js");
      const had = await storedCode();
      const fresh = !had;
      const code = had ?? blob.newCode();
      const { keys, old, stored } = await saveToServer(broker, passphrase, code, data);
      // Kept only once a copy exists under it; shown each time, so it can be written down.
      if (fresh) await db.putSetting(CODE_SETTING, await sealed.seal(code, "backup-code"));
      const auto = $("backup-auto").checked && {
        broker,
        salt: sk.salt,
        kdf: sk.kdf,
        fileKey: await sealed.seal(sk.key, "auto-backup:file"),
        seed: await sealed.seal(keys.seed, "auto-backup:seed"),
        wrap: await sealed.seal(keys.wrap, "auto-backup:wrap"),
        last: await contentDigest(doc),
        stored, // what repairs a copy the server lost (checkAutoCopy)
        at: Date.now(),
      };
      await db.putSetting(AUTO_SETTING, auto || null);
      renderAutoStatus();
      $("backup-status").textContent = `${count} saved on ${brokerHttp.httpBase(broker)}.${oldCopiesText(old)}`;
      // The address too: the restore form asks for it, and the copy's keys are derived
      // from it as written (another name for the same server finds nothing).
      $("backup-code").textContent = `Backup code: ${blob.codeText(code)}. ${
        fresh ? "Write it down now and keep it apart from this phone" : "The same as before; keep it apart from this phone"
      }: a restore from the server needs it, the passphrase and the server's address as written here: ${brokerHttp.httpBase(broker)}.`;
      $("backup-code").hidden = false;
      // The code is the one thing to write down now, and it is not in the status line:
      // the focus goes to it, so that a screen reader reads it out.
      $("backup-code").focus();
    }
    $("backup-pass").value = $("backup-pass2").value = "";
    backupSaved = true;
  } catch (exc) {
    $("backup-status").textContent = "";
    showError("backup-error", `Could not save the backup: ${printable(exc.message)}`);
  } finally {
    $("backup-submit").disabled = false;
    renderBackupTargets();
    refocus(event.submitter);
  }
}

// A copy on the broker: the sealed file wrapped under keys of the passphrase AND the
// backup code (js/blobkeys.js), so that a thief of the server cannot test guesses.
async function saveToServer(broker, passphrase, code, data) {
  const blob = await import("./blobkeys.js");
  const origin = brokerHttp.httpBase(broker);
  const keys = await blob.blobKeys(passphrase, code, origin, brokerHttp.DEFAULT_BACKUP_NAME, {
    onProgress: progress("Deriving the server copy's keys"),
  });
  const blobPk = await publicKeyOfSeed(keys.seed);
  const wrapped = blob.wrap(keys, blobPk, data);
  await brokerHttp.putBlob(broker, keys.seed, wrapped);
  // Copies this phone made on that broker under another passphrase (a new one was
  // given by saving again): deleted now, as the agent's passwd does, so that whoever
  // learnt the old passphrase opens nothing; one that cannot be deleted now is kept in
  // the list and tried again at the next save (and by a "No, it wasn't me").
  const copies = [];
  const old = { deleted: 0, failed: [] };
  for (const copy of (await db.getSetting(COPIES_SETTING)) ?? []) {
    if (copy.broker !== broker) {
      copies.push(copy);
      continue;
    }
    const seed = await sealed.open(copy.seed, `server-copy:${broker}`);
    if (equal(seed, keys.seed)) continue; // the copy just written
    try {
      if (await brokerHttp.deleteBlob(broker, seed)) old.deleted++;
    } catch (exc) {
      copies.push(copy);
      old.failed.push(exc.message);
    }
  }
  copies.push({ broker, seed: await sealed.seal(keys.seed, `server-copy:${broker}`) });
  await db.putSetting(COPIES_SETTING, copies);
  return { keys, old, stored: await sha256Hex(wrapped) };
}

// What saveToServer did with the copies under another passphrase, for the status line.
function oldCopiesText({ deleted, failed }) {
  const gone = deleted
    ? " The copy under the previous passphrase was deleted; if that passphrase may be known, retire older backups too (below)."
    : "";
  if (!failed.length) return gone;
  return `${gone} A copy under a previous passphrase could not be deleted (${printable(failed.join("; "))}); it is tried again at the next save.`;
}

const sha256Hex = async (bytes) => hex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));

// What a copy holds, apart from when it was made: an unchanged list needs no new copy.
const contentDigest = (doc) => sha256Hex(utf8(JSON.stringify({ ...doc, created_at: 0 })));

// After each change (every path that changes accounts ends in refreshAccounts), the
// automatic server copy is rewritten under the kept keys: one upload at a time, the
// last change wins; a failure is said and tried again after the next change or start.
let autoRunning = null;
let autoAgain = false;

function autoBackup() {
  if (autoRunning) {
    autoAgain = true;
    return autoRunning;
  }
  autoRunning = (async () => {
    do {
      autoAgain = false;
      await autoBackupOnce();
    } while (autoAgain);
  })().finally(() => (autoRunning = null));
  return autoRunning;
}

// A copy can go without any upload failing: the server's data restored from an older
// copy brings back an older copy, or none, and says nothing. So once per run of the app,
// when its server is first reached, the copy is compared with what this phone stored
// there last (`stored`, the SHA-256 of the uploaded bytes: nothing secret), and written
// again if it is gone or another (as the agent's backup_actions.repair_auto_backup does).
let autoCheck = false; // the next autoBackupOnce compares the server's copy first
let autoChecked = false; // asked for in this run already

async function checkAutoCopy(broker) {
  if (autoChecked) return;
  const auto = await db.getSetting(AUTO_SETTING);
  if (!auto?.stored || auto.broker !== broker || autoChecked) return;
  autoChecked = autoCheck = true;
  autoBackup();
}

// How the server's copy differs from the one this phone stored last, or null: the same.
async function copyLost(auto, seed) {
  let copy;
  try {
    copy = await brokerHttp.getBlob(auto.broker, seed);
  } catch (exc) {
    if (exc.code === "not_found") return "is gone";
    throw exc;
  }
  return (await sha256Hex(copy)) === auto.stored ? null : "is not the one this phone wrote last (an older one?)";
}

async function autoBackupOnce() {
  const auto = await db.getSetting(AUTO_SETTING);
  if (!auto) return;
  const check = autoCheck && !!auto.stored;
  autoCheck = false;
  const where = `The copy on ${brokerHttp.httpBase(auto.broker)}`;
  let lost = null;
  try {
    const format = await import("./backup.js");
    const blob = await import("./blobkeys.js");
    const doc = format.backupDocument(await backupLines(), (await db.getSetting("deviceName")) ?? "");
    const digest = await contentDigest(doc);
    const keys = { seed: await sealed.open(auto.seed, "auto-backup:seed"), wrap: await sealed.open(auto.wrap, "auto-backup:wrap") };
    if (check) {
      try {
        lost = await copyLost(auto, keys.seed);
      } catch (exc) {
        toast(`${where} could not be checked (${printable(exc.message)}).`);
      }
    }
    if (digest === auto.last && !lost) return;
    const sk = { key: await sealed.open(auto.fileKey, "auto-backup:file"), salt: auto.salt, kdf: auto.kdf };
    const blobPk = await publicKeyOfSeed(keys.seed);
    const wrapped = blob.wrap(keys, blobPk, format.sealBackupWith(doc, sk));
    await brokerHttp.putBlob(auto.broker, keys.seed, wrapped);
    const now = await db.getSetting(AUTO_SETTING); // turned off meanwhile (a "no"): stays off
    if (now) await db.putSetting(AUTO_SETTING, { ...now, last: digest, stored: await sha256Hex(wrapped), at: Date.now() });
    renderAutoStatus();
    if (lost)
      toast(`${where} ${lost} (the server's data may have been restored from an older copy): it was written again and has every change now.`);
  } catch (exc) {
    const why = lost ? `${where} ${lost}, and could not be written again` : "The copy on the server could not be updated";
    toast(`${why} (${printable(exc.message)}); it is tried again after the next change.`);
  }
}

// The sealed backup of a server copy: from the address, the typed code and the passphrase.
async function readFromServer(address, typedCode, passphrase) {
  const blob = await import("./blobkeys.js");
  const code = blob.parseCode(typedCode);
  const keys = await blob.blobKeys(passphrase, code, brokerHttp.httpBase(address), brokerHttp.DEFAULT_BACKUP_NAME, {
    onProgress: progress("Deriving the server copy's keys"),
  });
  const stored = await brokerHttp.getBlob(address, keys.seed);
  return { code, data: blob.unwrap(keys, await publicKeyOfSeed(keys.seed), stored) };
}

// One backup line into this app: verification codes at once; a push account recovers
// with its recovery key (a new credential of this phone), else waits for a new QR code.
async function restoreLine(line, order, deviceName) {
  const base = { name: line.name, order, uvCredential: null, privateKey: null, publicKey: null, recovery: null };
  const codes = line.otp ? "; verification codes work" : "";
  if (!line.push) {
    const { label, issuer } = line.otp;
    await putCodesAccount({ name: line.name, label, issuer, totp: totpOf(line.otp) }, order, deviceName);
    return "verification codes work";
  }
  const p = line.push;
  const common = { ...base, broker: p.broker, rp: p.rp, rp_name: p.rp_name, label: p.label };
  let failed = null;
  if (p.recovery_seed) {
    try {
      const made = await brokerHttp.recover(p, deviceName);
      await db.putAccount({
        ...common,
        cid: made.cid,
        user: made.user,
        deviceName,
        added: Date.now(),
        privateKey: made.keyPair.privateKey,
        publicKey: made.keyPair.publicKey,
        totp: line.otp && (await sealedTotp(made.cid, totpOf(line.otp))),
        recovery: { publicKey: made.recovery.publicKey, seed: await sealed.seal(made.recovery.seed, `recovery:${made.cid}`) },
      });
      return `recovered: sign-in requests reach this phone${codes}`;
    } catch (exc) {
      failed = exc;
    }
  }
  // Kept with its recovery key unless the server said it works no more: a recovery that
  // failed for a passing reason can be tried again from the Python agent or a backup.
  const keep = p.recovery_seed && !SPENT.has(failed?.code);
  await db.putAccount({
    ...common,
    cid: p.cid,
    user: p.user,
    deviceName: p.device_name,
    added: p.added,
    actionRequired: true,
    totp: line.otp && (await sealedTotp(p.cid, totpOf(line.otp))),
    recovery: keep ? { publicKey: null, seed: await sealed.seal(p.recovery_seed, `recovery:${p.cid}`) } : null,
  });
  const why = failed ? ` (the recovery failed: ${failed.message})` : "";
  return `action required: scan a new QR code from ${p.rp_name}${why}${codes}`;
}

async function restoreBackup(event) {
  event.preventDefault();
  showError("restore-error", null);
  const report = $("restore-report");
  report.replaceChildren();
  const fromServer = event.submitter?.id === "restore-server";
  const file = $("restore-file").files[0];
  const address = $("restore-server-url").value.trim();
  const passphrase = $("restore-pass").value;
  const deviceName = $("restore-device-name").value.trim() || defaultDeviceName();
  if ((await db.listAccounts()).length)
    return showError("restore-error", "Restore works in an app without accounts (as on a new phone). Nothing was changed.");
  if (!fromServer && !file) return showError("restore-error", "Choose the backup file first.", "restore-file");
  if (!fromServer && file.size > MAX_BACKUP_FILE) return showError("restore-error", "This file is too large to be a pushauth backup.", "restore-file");
  if (fromServer && !address) return showError("restore-error", "Type the address of the server the copy was saved on.", "restore-server-url");
  if (!passphrase) return showError("restore-error", "Type the backup's passphrase.", "restore-pass");
  if ([...deviceName].length > 64 || hasUnsafe(deviceName))
    return showError("restore-error", "The phone's name must be 1 to 64 characters without control or invisible characters.", "restore-device-name");
  for (const id of ["restore-submit", "restore-server"]) $(id).disabled = true;
  try {
    let opened;
    let code = null;
    try {
      const { openBackup } = await import("./backup.js");
      let data;
      if (fromServer) ({ code, data } = await readFromServer(address, $("restore-code").value, passphrase));
      else data = new Uint8Array(await file.arrayBuffer());
      opened = await openBackup(data, passphrase, { onProgress: progress("Opening the backup") });
    } catch (exc) {
      $("backup-status").textContent = "";
      return showError("restore-error", `Could not open the backup: ${printable(exc.message)}. Nothing was changed.`);
    }
    $("backup-status").textContent = "Restoring…";
    const done = [];
    for (const [order, line] of opened.lines.entries()) done.push([line.name, await restoreLine(line, order, deviceName)]);
    for (const [name, what] of done) report.append(text("li", `${name}: ${what}`));
    // The code of a server copy stays for this phone's own server copies (as the agent keeps it).
    if (code) await db.putSetting(CODE_SETTING, await sealed.seal(code, "backup-code"));
    for (const id of ["restore-pass", "restore-file", "restore-code"]) $(id).value = "";
    $("device-name").value = deviceName;
    await db.putSetting("deviceName", deviceName);
    await refreshAccounts();
    renderBackupTargets();
    for (const broker of new Set(accountsCache.filter(hasKey).map((a) => a.broker))) connectionFor(broker);
    $("backup-status").textContent = `Restored ${counted(opened.lines.length, "account")} from the backup of '${printable(opened.deviceName)}'.`;
  } finally {
    for (const id of ["restore-submit", "restore-server"]) $(id).disabled = false;
    refocus(event.submitter);
  }
}

// -- Web Push --------------------------------------------------------------------------

async function setupPush(conn) {
  // Not those the broker refused at this connect: they are being removed (a refused one
  // in the request would fail it, and that is no answer about push).
  const cids = (await accountsAt(conn.url)).map((a) => a.cid).filter((cid) => !conn.rejected.has(cid));
  if (!cids.length) return;
  let key;
  try {
    key = await brokerKey(conn, cids);
  } catch {
    return; // no answer about push now: asked again at the next connect
  }
  if (!key) pushState.set(conn.url, { state: PUSH.UNAVAILABLE });
  else if (!browserCanPush()) pushState.set(conn.url, { state: PUSH.FAILED, key, why: "this browser has no push notifications" });
  else {
    pushState.set(conn.url, { state: PUSH.OFFERED, key });
    // Turned on before (permission granted): renewed on every connect, silently.
    if (Notification.permission === "granted") await enablePush(conn, key);
  }
  renderPush();
}

async function enablePush(conn, key) {
  try {
    await turnOn(conn, (await accountsAt(conn.url)).map((a) => a.cid), key);
    pushState.set(conn.url, { state: PUSH.ON, key });
  } catch (exc) {
    pushState.set(conn.url, { state: PUSH.FAILED, key, why: exc.message });
  }
}

function renderPush() {
  const states = [...pushState.values()];
  const note = $("push-note");
  const button = $("push-on");
  const on = states.some((p) => p.state === PUSH.ON);
  const offered = states.find((p) => p.state === PUSH.OFFERED);
  const failed = states.find((p) => p.state === PUSH.FAILED);
  button.hidden = !offered && !failed;
  note.dataset.state = on ? PUSH.ON : offered ? PUSH.OFFERED : failed ? PUSH.FAILED : PUSH.UNAVAILABLE;
  $("push-text").textContent = on
    ? "Notifications are on: you are told when a sign-in request is waiting, even with this app closed."
    : offered
      ? "Turn on notifications to hear about sign-in requests while this app is closed."
      : failed
        ? `Notifications could not be turned on here (${printable(failed.why)}): keep this app open to receive sign-in requests.`
        : "Push notifications are not set up on this server: keep this app open to receive sign-in requests.";
  note.hidden = !states.length; // no server asked yet (no account): nothing to say about one
}

async function pushOnTapped() {
  for (const [broker, p] of pushState)
    if (p.state === PUSH.OFFERED || p.state === PUSH.FAILED) await enablePush(connectionFor(broker), p.key);
  renderPush();
}

// -- events from the brokers ----------------------------------------------------------

events.addEventListener("ready", ({ detail }) => {
  // The broker re-sends every open question right after its welcome: those it does not
  // re-send were closed while this app was away.
  for (const [id, n] of notices) if (n.connection === detail.connection) notices.delete(id);
  render();
  setupPush(detail.connection);
  checkAutoCopy(detail.connection.url);
});

events.addEventListener("challenge", async ({ detail }) => {
  const { frame, connection } = detail;
  const account = await accountOf(frame.cid);
  // Not one of ours, or it names another RP than the account's: neither shown nor answered.
  if (!account || account.rp !== frame.rp || account.broker !== connection.url) return;
  prompts.add(frame, connection);
  render();
});

events.addEventListener("notice", async ({ detail }) => {
  const { frame, connection } = detail;
  const account = await db.getAccount(frame.cid);
  if (!account || account.broker !== connection.url) return; // not one of ours
  notices.set(frame.notice, { frame, connection });
  render();
});

events.addEventListener("notice_closed", ({ detail }) => {
  // Our own answer is reported by answerNotice; this is another device's, or withdrawn.
  if (notices.delete(detail.notice) && !detail.mine)
    toast(NOTICE_OUTCOMES[detail.outcome] ?? "The recovery question was closed.");
  render();
});

events.addEventListener("ended", ({ detail }) => {
  const shownCh = $("prompt").dataset.ch;
  const frame = prompts.byCh.get(detail.ch)?.frame;
  if (prompts.remove(detail.ch) && shownCh === detail.ch && !detail.answered)
    toast(detail.here ? ANSWERED_HERE : endedText(frame, detail.reason) ?? "The request ended.", { about: detail.ch });
  render();
});

events.addEventListener("removed", async ({ detail }) => {
  const account = await db.getAccount(detail.cid);
  if (!account) return;
  if (detail.reason === "unknown_credential") {
    await keepUnknown(account);
    toast(`${printable(account.name)} ${unknownText(account)}`);
  } else {
    await forget(detail.cid);
    toast(`${printable(account.name)} ${REMOVALS[detail.reason] ?? "was removed."}`);
  }
  render();
});

events.addEventListener("status", ({ detail }) => {
  const conn = connections.get(detail.broker);
  if (conn) conn.state = detail.state;
  if (detail.state === "online") for (const [id, broker] of unsentAt) if (broker === detail.broker) showError(id, null);
  renderConn();
});

events.addEventListener("fault", ({ detail }) => {
  $("fault").hidden = false;
  $("fault").textContent = printable(detail.message);
});

// -- start ---------------------------------------------------------------------------

async function main() {
  buildKeypad();
  $("add-open").addEventListener("click", openAddView);
  $("add-cancel").addEventListener("click", () => (stopScan(), show("home")));
  $("add-form").addEventListener("submit", (e) => (e.preventDefault(), addFromText($("link").value)));
  $("import-file").addEventListener("change", () => chooseImportFile());
  $("import-password-form").addEventListener("submit", (e) => (e.preventDefault(), openImportFile($("import-password").value)));
  $("again-add").addEventListener("click", () => answerAgain(true));
  $("again-cancel").addEventListener("click", () => answerAgain(false));
  $("number-form").addEventListener("submit", (e) => (e.preventDefault(), decide("approve")));
  $("deny").addEventListener("click", () => decide("deny"));
  $("notice-yes").addEventListener("click", () => answerNotice("confirm"));
  $("notice-no").addEventListener("click", () => answerNotice("disown"));
  $("report").addEventListener("click", () => answering || confirmReport(true));
  $("report-back").addEventListener("click", () => answering || (confirmReport(false), $("report").focus()));
  $("report-yes").addEventListener("click", () => answering || (confirmReport(false), $("prompt-title").focus(), decide("fraud")));
  $("rename-form").addEventListener("submit", rename);
  $("uv").addEventListener("change", toggleUv);
  $("move-up").addEventListener("click", () => move(-1));
  $("move-down").addEventListener("click", () => move(1));
  $("remove").addEventListener("click", remove);
  $("account-back").addEventListener("click", () => show("home"));
  $("backup-open").addEventListener("click", openBackupView);
  $("backup-back").addEventListener("click", () => (hideExport(), show("home")));
  $("export-show").addEventListener("click", showExport);
  $("export-hide").addEventListener("click", hideExport);
  $("export-copy").addEventListener("click", copyExportLinks);
  $("backup-retire").addEventListener("click", retireOlderBackups);
  $("backup-form").addEventListener("submit", writeBackup);
  $("restore-form").addEventListener("submit", restoreBackup);
  $("push-on").addEventListener("click", pushOnTapped);
  $("scan").hidden = !scanSupported();
  $("scan").addEventListener("click", () =>
    startScan($("video"), $("scanner"), $("scan-status"), (link) => {
      $("link").value = link;
      addFromText(link);
    }),
  );
  $("device-name").value = (await db.getSetting("deviceName")) ?? "";
  // Left empty, the phone is called this (the services list it so).
  $("device-name").placeholder = $("restore-device-name").placeholder = defaultDeviceName();
  await sealPlainSecrets();
  await uniqueNames();
  await refreshAccounts();
  renderAutoStatus();
  for (const broker of new Set(accountsCache.filter(hasKey).map((a) => a.broker))) connectionFor(broker);
  setInterval(tickCodes, 1000);
  // Back online, or back on screen (a phone stops a hidden page's timers): a connection
  // that is down tries again now, not when its backoff ends (up to a minute later).
  // Offline: the connections are dropped at once rather than left "Connected".
  // `staleMs`: an open connection silent this long is replaced (see reconnectNow); a push
  // says a request waits, so one that did not bring it is replaced whatever its age.
  const reconnectAll = (staleMs = STALE_MS) => {
    for (const conn of connections.values()) conn.reconnectNow(staleMs);
  };
  window.addEventListener("online", () => (reconnectAll(), renderConn()));
  window.addEventListener("offline", () => {
    for (const conn of connections.values()) conn.dropNow();
    renderConn();
  });
  document.addEventListener("visibilitychange", () => document.visibilityState === "visible" && reconnectAll());
  // On screen, a connection lost without a word is found by asking (BrokerConnection.probe).
  setInterval(() => {
    if (document.visibilityState === "visible") for (const conn of connections.values()) conn.probe();
  }, PROBE_EVERY_MS);
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("sw.js").catch(() => null);
    navigator.serviceWorker.addEventListener("message", ({ data }) => {
      if (data?.t === "push") reconnectAll(0);
    });
  }
  render();
  takeLinkFromAddress();
  window.addEventListener("hashchange", takeLinkFromAddress); // the app was open already
  document.body.dataset.ready = "1";
}

main();
