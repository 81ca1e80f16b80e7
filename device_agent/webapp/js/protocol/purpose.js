// Context entries with a meaning to devices (docs/protocol.md section 15.1; mirrors
// protocol/purpose.py). `purpose` = "setup test" marks an RP's test notification to a
// device it is adding: the app words it so, and still shows and signs the entry like any
// other (a broker cannot add or drop it without the context hash failing).

export const PURPOSE = "purpose";
// Compared exactly: no case folding, no trimming.
export const SETUP_TEST = "setup test";

export function isSetupTest(ctx) {
  return Object.hasOwn(ctx, PURPOSE) && ctx[PURPOSE] === SETUP_TEST;
}
