// The app's storage: one IndexedDB database. Accounts (with their WebCrypto key pair,
// whose private half is non-extractable: IndexedDB keeps the CryptoKey object itself,
// never its bytes; their TOTP secret and recovery key sealed by sealed.js) and settings
// (the device name, the sealing key).

const DB_NAME = "pushauth";
const DB_VERSION = 1;

let opened = null;

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export function openDb() {
  opened ??= new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains("accounts")) db.createObjectStore("accounts", { keyPath: "cid" });
      if (!db.objectStoreNames.contains("settings")) db.createObjectStore("settings");
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  return opened;
}

async function tx(store, mode, fn) {
  const db = await openDb();
  const t = db.transaction(store, mode);
  const result = await fn(t.objectStore(store));
  await new Promise((resolve, reject) => {
    t.oncomplete = resolve;
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error ?? new Error("transaction aborted"));
  });
  return result;
}

export async function listAccounts() {
  const all = await tx("accounts", "readonly", (s) => request(s.getAll()));
  return all.sort((a, b) => a.order - b.order || a.added - b.added);
}

export const getAccount = (cid) => tx("accounts", "readonly", (s) => request(s.get(cid)));
export const putAccount = (account) => tx("accounts", "readwrite", (s) => request(s.put(account)));
export const deleteAccount = (cid) => tx("accounts", "readwrite", (s) => request(s.delete(cid)));

export const getSetting = (key) => tx("settings", "readonly", (s) => request(s.get(key)));
export const putSetting = (key, value) => tx("settings", "readwrite", (s) => request(s.put(value, key)));

// Writes `value` unless the key is set already, in one transaction; returns what is stored.
export const putSettingOnce = (key, value) =>
  tx("settings", "readwrite", async (s) => {
    const had = await request(s.get(key));
    if (had !== undefined) return had;
    await request(s.add(value, key));
    return value;
  });
