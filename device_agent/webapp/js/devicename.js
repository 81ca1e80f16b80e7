// What this phone is called at a service when its user gives no name: its browser and
// system ("Chrome on Android"), shown as the name field's placeholder so the user sees
// it before adding. A fixed "Web authenticator" made two unnamed phones read the same
// in the service's device list, which is where the user picks the one to remove.

const BROWSERS = [
  [/\bEdgA?\//, "Edge"],
  [/\bSamsungBrowser\//, "Samsung Internet"],
  [/\bFirefox\/|\bFxiOS\//, "Firefox"],
  [/\bCriOS\/|\bChrome\//, "Chrome"],
  [/\bSafari\//, "Safari"],
];
const SYSTEMS = [
  [/\bAndroid\b/, "Android"],
  [/\biPhone\b/, "iPhone"],
  [/\biPad\b/, "iPad"],
  [/\bWindows\b/, "Windows"],
  [/\bMac OS X\b|\bMacintosh\b/, "macOS"],
  [/\bCrOS\b/, "ChromeOS"],
  [/\bLinux\b/, "Linux"],
];

const first = (table, text) => table.find(([re]) => re.test(text))?.[1] ?? "";

const FALLBACK_NAME = "Web authenticator";

// From the user agent string (every browser has one; userAgentData is Chromium's only).
export function defaultDeviceName(userAgent = globalThis.navigator?.userAgent ?? "") {
  const browser = first(BROWSERS, userAgent);
  const system = first(SYSTEMS, userAgent);
  if (browser && system) return `${browser} on ${system}`;
  return browser || system || FALLBACK_NAME;
}
