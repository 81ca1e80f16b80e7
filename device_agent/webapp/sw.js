// Service worker: the app shell works offline. Network first (an updated app reaches
// the phone at once), the cached copy when offline. Only the shell's own files are
// ever cached: no API answer, no other origin, and WebSocket traffic never passes here.

const CACHE = "pushauth-shell-v1";
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
  "js/connection.js",
  "js/db.js",
  "js/keys.js",
  "js/prompts.js",
  "js/scan.js",
  "js/scan-worker.js",
  "js/totp.js",
  "js/webauthn.js",
  "js/protocol/bytes.js",
  "js/protocol/errors.js",
  "js/protocol/frames.js",
  "js/protocol/msgpack.js",
  "js/protocol/session.js",
  "js/protocol/signing.js",
  "js/protocol/text.js",
  "js/protocol/uri.js",
];
// Built by scripts/build-webapp; an app served without it still installs.
const OPTIONAL = ["vendor/jsQR.js"];
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
