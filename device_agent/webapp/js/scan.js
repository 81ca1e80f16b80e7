// Reading the enrollment QR code with the camera, through the browser's own
// BarcodeDetector (Chrome on Android and macOS, Safari 17+ behind a flag...). Where the
// browser has none, the Scan button is hidden and the link is pasted instead: no QR
// decoder is shipped, so the app has no third-party code (see deploy/webapp.md).

let stream = null;
let running = false;

export function scanSupported() {
  return "BarcodeDetector" in globalThis && !!navigator.mediaDevices?.getUserMedia;
}

export async function startScan(video, box, status, onLink) {
  box.hidden = false;
  try {
    const formats = await BarcodeDetector.getSupportedFormats();
    if (!formats.includes("qr_code")) throw new Error("this browser cannot read QR codes");
    const detector = new BarcodeDetector({ formats: ["qr_code"] });
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    video.srcObject = stream;
    await video.play();
    running = true;
    while (running) {
      const found = await detector.detect(video).catch(() => []);
      const link = found.map((c) => c.rawValue).find((v) => v.startsWith("pushauth://enroll?"));
      if (link) {
        stopScan();
        onLink(link);
        return;
      }
      await new Promise((r) => requestAnimationFrame(r));
    }
  } catch (exc) {
    status.textContent = `The camera cannot be used: ${exc.message}. Paste the setup link instead.`;
    stopScan(false);
  }
}

export function stopScan(hide = true) {
  running = false;
  stream?.getTracks().forEach((t) => t.stop());
  stream = null;
  if (hide) document.getElementById("scanner").hidden = true;
}
