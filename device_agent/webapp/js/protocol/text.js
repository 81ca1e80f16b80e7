// Text that people read (protocol/text.py): context values and names come from the RP,
// the broker or whoever is behind them. Controls, format characters (bidi overrides,
// zero-width joiners) and line separators are made visible escapes, never obeyed.
// The page puts text in with textContent only, so no markup is ever interpreted.

const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu;

export function printable(text) {
  return String(text).replace(UNSAFE, (ch) => {
    const code = ch.codePointAt(0);
    return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
  });
}

// Whether `text` holds a character printable() would escape (protocol/text.py
// first_unsafe): names people give are refused with it rather than shown escaped.
export function hasUnsafe(text) {
  UNSAFE.lastIndex = 0; // a /g expression's test() starts where the last one stopped
  return UNSAFE.test(String(text));
}
