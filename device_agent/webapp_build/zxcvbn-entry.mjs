// Bundled by scripts/build-webapp into device_agent/webapp/vendor/zxcvbn.js, one ES module
// the app can load (and an import map can pin): zxcvbn-ts and its word lists import each
// other by package name, which a browser cannot resolve without a bundler.
export { ZxcvbnFactory } from "@zxcvbn-ts/core";
export * as common from "@zxcvbn-ts/language-common";
export * as en from "@zxcvbn-ts/language-en";
