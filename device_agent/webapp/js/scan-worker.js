// Decodes camera frames with jsQR (vendor/jsQR.js, pinned by scripts/build-webapp), off
// the page's main thread. A classic worker: jsQR is a UMD bundle, not an ES module.
importScripts("../vendor/jsQR.js");

self.onmessage = ({ data }) => {
  const found = self.jsQR(data.pixels, data.width, data.height, { inversionAttempts: "attemptBoth" });
  self.postMessage(found ? found.data : null);
};
