// Bundled by scripts/build-webapp into device_agent/webapp/vendor/hash-wasm/argon2.js, one
// ES module the app can load (and an import map can pin): hash-wasm's Argon2id and the
// BLAKE2b it uses, their WebAssembly embedded as base64, without the package's other
// hashes (esbuild leaves out what is not exported here).
export { argon2id } from "hash-wasm";
