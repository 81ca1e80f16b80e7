// Service worker: the app shell works offline. Network first (an updated app reaches
// the phone at once), the cached copy when offline. Only the shell's own files are
// ever cached: no API answer, no other origin, and WebSocket traffic never passes here.

const CACHE = "pushauth-shell-v7";
const SHELL = [
  "./",
  "index.html",
  "app.css",
  "manifest.webmanifest",
  "icons/icon.svg",
  "icons/icon-192.png",
  "icons/icon-512.png",
  "icons/icon-maskable-512.png",
  "js/app.js",
  "js/backup.js",
  "js/blobkeys.js",
  "js/brokerclock.js",
  "js/brokerhttp.js",
  "js/connection.js",
  "js/db.js",
  "js/devicename.js",
  "js/keys.js",
  "js/prompts.js",
  "js/push.js",
  "js/scan.js",
  "js/sealed.js",
  "js/sealedfile.js",
  "js/otp.js",
  "js/migration.js",
  "js/importers/sources.js",
  "js/importers/entries.js",
  "js/importers/aegis.js",
  "js/importers/twofas.js",
  "js/importers/andotp.js",
  "js/importers/linked.js",
  "js/export.js",
  "js/scan-worker.js",
  "js/totp.js",
  "js/webauthn.js",
  "js/protocol/bytes.js",
  "js/protocol/errors.js",
  "js/protocol/frames.js",
  "js/protocol/msgpack.js",
  "js/protocol/purpose.js",
  "js/protocol/session.js",
  "js/protocol/signing.js",
  "js/protocol/text.js",
  "js/protocol/uri.js",
];
// Built by scripts/build-webapp; an app served without it still installs.
const OPTIONAL = [
  "vendor/jsQR.js",
  "vendor/zxcvbn.js",
  "vendor/uqr.js",
  "vendor/hash-wasm/argon2.js",
  ...["argon2.js", "blake2.js", "_blake.js", "_md.js", "_u64.js", "utils.js", "scrypt.js", "pbkdf2.js", "sha2.js", "hmac.js"].map((f) => `vendor/noble-hashes/${f}`),
  ...["chacha.js", "_arx.js", "_poly1305.js", "utils.js"].map((f) => `vendor/noble-ciphers/${f}`),
];
const SHELL_URLS = new Set([...SHELL, ...OPTIONAL].map((p) => new URL(p, self.registration.scope).href));

self.addEventListener("install", (event) => {
  event.waitUntil(
    (async () => {
      const cache = await caches.open(CACHE);
      await cache.addAll(SHELL);
      await Promise.all(OPTIONAL.map((p) => cache.add(p).catch(() => null)));
      await self.skipWaiting();
    })(),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  url.search = "";
  if (event.request.method !== "GET" || !SHELL_URLS.has(url.href)) return; // the network, uncached
  event.respondWith(
    (async () => {
      const cache = await caches.open(CACHE);
      try {
        const fresh = await fetch(event.request);
        if (fresh.ok) await cache.put(url.href, fresh.clone());
        return fresh;
      } catch {
        const cached = await cache.match(url.href);
        if (cached) return cached;
        throw new Error("offline and not cached");
      }
    })(),
  );
});

// A push from the broker says only that a request is waiting (no number, no context):
// show that, and open the app on tap; the app gets the request over its WebSocket.
self.addEventListener("push", (event) => {
  event.waitUntil(
    (async () => {
      await self.registration.showNotification("pushauth", {
        body: "A sign-in request is waiting",
        tag: "pushauth-signin",
        renotify: true,
        requireInteraction: true,
        icon: "icons/icon-192.png",
      });
      // An open app whose connection dropped (a phone asleep) reconnects at once.
      const open = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      for (const client of open) client.postMessage({ t: "push" });
    })(),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(
    (async () => {
      const open = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const app = open.find((c) => c.url.startsWith(self.registration.scope));
      return app ? app.focus() : self.clients.openWindow(self.registration.scope);
    })(),
  );
});
