// Reading a QR code with the camera: a service's setup link, any service's
// verification-code link (otpauth://) or a Google Authenticator export
// (otpauth-migration://). The browser's own BarcodeDetector where it has one (Chrome on
// Android and macOS), else jsQR in a worker (scan-worker.js; pinned by
// scripts/build-webapp). Where neither can run, the app says so and the link is pasted
// instead.

const LINK = /^(pushauth:\/\/enroll\?|otpauth:\/\/|otpauth-migration:\/\/)/i;
let stream = null;
let running = false;
let worker = null;

export function scanSupported() {
  return !!navigator.mediaDevices?.getUserMedia;
}

async function nativeDetector() {
  if (!("BarcodeDetector" in globalThis)) return null;
  const formats = await BarcodeDetector.getSupportedFormats().catch(() => []);
  if (!formats.includes("qr_code")) return null;
  const detector = new BarcodeDetector({ formats: ["qr_code"] });
  return async (video) => (await detector.detect(video).catch(() => [])).map((c) => c.rawValue);
}

function workerDetector() {
  worker ??= new Worker("js/scan-worker.js");
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  return (video) =>
    new Promise((resolve, reject) => {
      if (!video.videoWidth) return resolve([]);
      // At most 640 px wide: enough for a QR code on a screen, cheap to scan.
      const scale = Math.min(1, 640 / video.videoWidth);
      canvas.width = Math.round(video.videoWidth * scale);
      canvas.height = Math.round(video.videoHeight * scale);
      ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
      const { data, width, height } = ctx.getImageData(0, 0, canvas.width, canvas.height);
      worker.onmessage = ({ data: text }) => resolve(text ? [text] : []);
      worker.onerror = (e) => (e.preventDefault(), reject(new Error("the QR decoder is not installed on this server")));
      worker.postMessage({ pixels: data, width, height }, [data.buffer]);
    });
}

export async function startScan(video, box, status, onLink) {
  box.hidden = false;
  status.textContent = "Point the camera at the QR code.";
  try {
    const detect = (await nativeDetector()) ?? workerDetector();
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
    video.srcObject = stream;
    await video.play();
    running = true;
    while (running) {
      const link = (await detect(video)).find((text) => LINK.test(text));
      if (link) {
        stopScan();
        onLink(link);
        return;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (exc) {
    status.textContent = `The camera cannot be used here (${exc.message}). Paste the setup link instead.`;
    stopScan(false);
  }
}

export function stopScan(hide = true) {
  running = false;
  stream?.getTracks().forEach((t) => t.stop());
  stream = null;
  if (hide) document.getElementById("scanner").hidden = true;
}
