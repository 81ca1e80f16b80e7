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

// jsQR on `source` (a video frame or an image) drawn at most `maxWidth` px wide.
function workerDetector(maxWidth = 640) {
  worker ??= new Worker("js/scan-worker.js");
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  return (source) =>
    new Promise((resolve, reject) => {
      const sourceWidth = source.videoWidth ?? source.width;
      const sourceHeight = source.videoHeight ?? source.height;
      if (!sourceWidth) return resolve([]);
      const scale = Math.min(1, maxWidth / sourceWidth);
      canvas.width = Math.round(sourceWidth * scale);
      canvas.height = Math.round(sourceHeight * scale);
      ctx.fillStyle = "#fff"; // a transparent picture's code is drawn on white, not black
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
      const { data, width, height } = ctx.getImageData(0, 0, canvas.width, canvas.height);
      worker.onmessage = ({ data: text }) => resolve(text ? [text] : []);
      worker.onerror = (e) => (e.preventDefault(), reject(new Error("the QR decoder is not installed on this server")));
      worker.postMessage({ pixels: data, width, height }, [data.buffer]);
    });
}

// The link in a picture the person chose (a screenshot, a QR code sent to them): the
// camera's decoders on the image. At most 1,600 px wide for jsQR: a phone's screenshot
// keeps its code's modules, a big photo is scaled down. null: no code of ours in it.
// Throws if the file is no image the browser can open.
export async function scanImage(file) {
  const bitmap = await createImageBitmap(file);
  try {
    const detect = (await nativeDetector()) ?? workerDetector(1600);
    return (await detect(bitmap)).find((text) => LINK.test(text)) ?? null;
  } finally {
    bitmap.close();
  }
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
