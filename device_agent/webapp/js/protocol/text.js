// Text that people read (protocol/text.py): context values and names come from the RP,
// the broker or whoever is behind them. Controls, format characters (bidi overrides,
// zero-width joiners), line separators and characters that render as nothing (Unicode's
// Default_Ignorable_Code_Point: Hangul fillers, variation selectors...) or as a blank
// cell (U+2800 BRAILLE PATTERN BLANK) are made visible escapes, never obeyed or hidden.
// Spaces other than U+0020 are shown as U+0020 (protocol/text.py printable says why).
// The page puts text in with textContent only, so no markup is ever interpreted.
// The vectors' `text` group and tests/webapp/test_webapp_protocol.py (every code point)
// hold this to the Python reference.

const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Default_Ignorable_Code_Point}\u2800]/u;
const UNSAFE_ALL = new RegExp(UNSAFE.source, "gu");
const OTHER_SPACE = /(?! )\p{Zs}/gu;

export function printable(text) {
  return String(text)
    .replace(UNSAFE_ALL, (ch) => {
      const code = ch.codePointAt(0);
      return code < 0x100 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
    })
    .replace(OTHER_SPACE, " ");
}

// The first character printable() would escape, or null (protocol/text.py first_unsafe).
export function firstUnsafe(text) {
  const found = UNSAFE.exec(String(text));
  return found === null ? null : found[0];
}

// Whether `text` holds such a character: names people give are refused with it rather
// than shown escaped.
export function hasUnsafe(text) {
  return firstUnsafe(text) !== null;
}
