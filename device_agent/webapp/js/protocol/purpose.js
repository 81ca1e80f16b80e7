// Context entries with a meaning to devices (docs/protocol.md section 15.1; mirrors
// protocol/purpose.py). `purpose` = "setup test" marks an RP's test notification to a
// device it is adding; `purpose` = "verify" marks a re-authentication of a person already
// signed in ("verify it's you"). The app words each so, and still shows and signs the
// entry like any other (a broker cannot add or drop it without the context hash failing).

export const PURPOSE = "purpose";
// Compared exactly: no case folding, no trimming.
export const SETUP_TEST = "setup test";
export const VERIFY = "verify";
const KNOWN = [SETUP_TEST, VERIFY];

// The agreed purpose of a challenge with this context, or null for a sign-in.
export function purposeOf(ctx) {
  const value = Object.hasOwn(ctx, PURPOSE) ? ctx[PURPOSE] : undefined;
  return KNOWN.includes(value) ? value : null;
}

export function isSetupTest(ctx) {
  return purposeOf(ctx) === SETUP_TEST;
}

export function isVerify(ctx) {
  return purposeOf(ctx) === VERIFY;
}
