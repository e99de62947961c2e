// Switch-provided text on the page: the one place it becomes DOM or attribute text.
//
// A caller's name is whatever the far end sent. Put on the page as text only (never HTML), it
// still carries the Unicode bidi controls: an override (U+202E) reverses not only the name but
// what follows it in the line, so "‮evil‬ (1008)" reads as "(1008) live". Every value therefore
// gets its own bidi isolate: a <bdi> element on the page (CSS unicode-bidi: isolate), or the
// isolate characters FSI…PDI in attribute and <option> text, which cannot hold elements. An
// isolate alone is not enough: a stray PDI (U+2069) in the value closes the isolate early
// (Chromium), and the override after it reaches the rest of the line. So each value is first
// balanced: closers without their opener are dropped, openers left open are closed at its end.
//
// The format functions (format.js) build "lines": arrays of our own words (strings) and values
// from the switch (val(...)). show() and label() here are the only ways lines reach the page.

const LRE = 0x202a;
const RLE = 0x202b;
const PDF = 0x202c;
const LRO = 0x202d;
const RLO = 0x202e;
const LRI = 0x2066;
const RLI = 0x2067;
const FSI = 0x2068;
const PDI = 0x2069;
const OPEN_EMBEDDING = new Set([LRE, RLE, LRO, RLO]);
const OPEN_ISOLATE = new Set([LRI, RLI, FSI]);
const HAS_BIDI = /[\u202a-\u202e\u2066-\u2069]/;

// A value from the switch, as a piece of a line (a string or a number; anything else is empty).
export const val = (value) => ({
  val: typeof value === "string" || typeof value === "number" ? String(value) : "",
});

// The value with its bidi embeddings, overrides and isolates matched as the Unicode bidi
// algorithm matches them (a PDI closes the embeddings opened since its isolate; a PDF never
// crosses an isolate): unmatched closers dropped, the openers still open closed at the end.
export function balanced(text) {
  if (!HAS_BIDI.test(text)) return text;
  const open = []; // "e" embedding/override, "i" isolate
  let out = "";
  for (const ch of text) {
    const c = ch.codePointAt(0);
    if (OPEN_EMBEDDING.has(c)) open.push("e");
    else if (OPEN_ISOLATE.has(c)) open.push("i");
    else if (c === PDF) {
      if (open[open.length - 1] !== "e") continue;
      open.pop();
    } else if (c === PDI) {
      const at = open.lastIndexOf("i");
      if (at < 0) continue;
      open.length = at;
    }
    out += ch;
  }
  for (let i = open.length - 1; i >= 0; i -= 1) {
    out += String.fromCodePoint(open[i] === "e" ? PDF : PDI);
  }
  return out;
}

// The line as the raw text of its pieces: for sorting, filtering and comparing, never shown.
export function plain(line) {
  return lineOf(line)
    .map((p) => (typeof p === "string" ? p : p.val))
    .join("");
}

// The line as one string for an attribute (title, aria-label) or an <option>: each value
// balanced and wrapped in FSI…PDI.
export function label(line) {
  return lineOf(line)
    .map((p) =>
      typeof p === "string" ? p : `${String.fromCodePoint(FSI)}${balanced(p.val)}${String.fromCodePoint(PDI)}`,
    )
    .join("");
}

// An attribute set to the line's label, written only when it changes.
export function setLabel(el, name, line) {
  const text = label(line);
  if (el.getAttribute(name) !== text) el.setAttribute(name, text);
}

// The element's content made the line: our words as text, each value a <bdi> of its balanced
// text. Rewritten only when the line changed (the board refills every row on each update).
export function show(el, line) {
  const pieces = lineOf(line);
  const key = JSON.stringify(pieces);
  if (el.__line === key) return;
  el.__line = key;
  el.replaceChildren(
    ...pieces.map((p) => (typeof p === "string" ? document.createTextNode(p) : isolated(p.val))),
  );
}

// One value as a <bdi> element of its balanced text.
export function isolated(value) {
  const bdi = document.createElement("bdi");
  bdi.textContent = balanced(value);
  return bdi;
}

// A line from a line, a lone value, or our own words.
function lineOf(line) {
  if (Array.isArray(line)) return line.filter((p) => p !== "" && !(p && p.val === ""));
  if (line && typeof line === "object") return line.val === "" ? [] : [line];
  return line ? [String(line)] : [];
}
