// Optional user verification before approving (per account): the phone's screen lock,
// fingerprint or face through WebAuthn, as Microsoft Authenticator asks for the device
// to be unlocked. A local gate: the assertion is checked here (the user-verified flag)
// and never sent anywhere; the signature the RP checks stays the Ed25519 one.

const UV_FLAG = 0x04;

export function available() {
  return typeof PublicKeyCredential !== "undefined" && !!navigator.credentials;
}

function random(n) {
  return crypto.getRandomValues(new Uint8Array(n));
}

// Registers a platform credential for this account; returns its id (bytes).
export async function register(accountLabel) {
  const cred = await navigator.credentials.create({
    publicKey: {
      rp: { name: "pushauth authenticator" },
      user: { id: random(16), name: accountLabel.slice(0, 64) || "account", displayName: accountLabel.slice(0, 64) || "account" },
      challenge: random(32),
      pubKeyCredParams: [
        { type: "public-key", alg: -8 },
        { type: "public-key", alg: -7 },
        { type: "public-key", alg: -257 },
      ],
      authenticatorSelection: { authenticatorAttachment: "platform", userVerification: "required", residentKey: "discouraged" },
      timeout: 60000,
      attestation: "none",
    },
  });
  return new Uint8Array(cred.rawId);
}

// Resolves when the user verified; throws otherwise (cancelled, failed, not verified).
export async function verifyUser(credentialId) {
  const assertion = await navigator.credentials.get({
    publicKey: {
      challenge: random(32),
      allowCredentials: [{ type: "public-key", id: credentialId }],
      userVerification: "required",
      timeout: 60000,
    },
  });
  const flags = new Uint8Array(assertion.response.authenticatorData)[32];
  if (!(flags & UV_FLAG)) throw new Error("the screen lock did not verify you");
}
