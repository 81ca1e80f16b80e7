// Web Push wake-ups (docs/protocol.md appendix A): when the app is closed, the broker
// sends a push that says only "a sign-in request is waiting"; the service worker shows
// it, and tapping it opens the app, which fetches the request over its WebSocket.

import { b64urlDecode } from "./protocol/bytes.js";

export const PUSH = Object.freeze({
  UNAVAILABLE: "unavailable", // the server sends no push (or does not know the extension)
  OFFERED: "offered", // the server can; the user has not turned it on here
  ON: "on",
  FAILED: "failed", // turning it on failed in this browser
});

export function browserCanPush() {
  return "serviceWorker" in navigator && "PushManager" in globalThis && "Notification" in globalThis;
}

// Asks the broker for its key; null when it sends no push (push_unavailable, or an older
// broker's unknown_frame). Any other failure (offline, a timeout, a credential removed
// meanwhile) says nothing about push: it is thrown, and asked again at the next connect.
export async function brokerKey(connection, cids) {
  try {
    return (await connection.pushSubscribe(cids, null)).key;
  } catch (exc) {
    if (exc.code === "push_unavailable" || exc.code === "unknown_frame") return null;
    throw exc;
  }
}

// Subscribes this browser (one subscription per app install) and registers it for
// `cids` at the broker. Must run from a tap: browsers ask for permission then.
export async function turnOn(connection, cids, key) {
  if ((await Notification.requestPermission()) !== "granted") throw new Error("notifications are not allowed");
  const registration = await navigator.serviceWorker.ready;
  const sub =
    (await registration.pushManager.getSubscription()) ??
    (await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key }));
  const json = sub.toJSON();
  await connection.pushSubscribe(cids, {
    endpoint: sub.endpoint,
    p256dh: b64urlDecode(json.keys.p256dh),
    auth: b64urlDecode(json.keys.auth),
  });
}
