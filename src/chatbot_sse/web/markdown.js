/**
 * A small, safe Markdown renderer for chat replies.
 *
 * Safety by construction: text only ever reaches the page through `textContent` and
 * `document.createTextNode`; elements come from a fixed list created with `createElement`;
 * the only attribute taken from the text is a link's `href`, and only when it parses as an
 * absolute http(s) URL. There is no `innerHTML` here, so HTML in the text is shown as text.
 *
 * Supported: paragraphs (single newlines are line breaks), fenced code blocks (an unclosed
 * fence runs to the end, which is what a reply still streaming looks like), headings,
 * block quotes, bullet and numbered lists, thematic breaks, inline code, bold, italic,
 * strikethrough, [links](https://...) and bare https:// URLs.
 */

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const BULLET = /^ {0,3}[-*+]\s+(.*)$/;
const ORDERED = /^ {0,3}(\d{1,9})[.)]\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const BLANK = /^\s*$/;

/**
 * Render Markdown text into a fresh document fragment.
 * @param {string} text
 * @returns {DocumentFragment}
 */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  renderBlocks(String(text).replace(/\r\n?/g, "\n").split("\n"), fragment);
  return fragment;
}

/**
 * Replace the children of `target` with the rendering of `text`.
 * @param {Element} target
 * @param {string} text
 */
export function renderInto(target, text) {
  target.replaceChildren(renderMarkdown(text));
}

/**
 * @param {string[]} lines
 * @param {Node} parent
 */
function renderBlocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (BLANK.test(line)) {
      i++;
      continue;
    }
    const fence = FENCE.exec(line);
    if (fence) {
      i = codeBlock(lines, i, fence[1], fence[2], parent);
      continue;
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const level = Math.min(heading[1].length + 2, 6); // h1/h2 belong to the page
      parent.appendChild(inline(`h${level}`, heading[2]));
      i++;
      continue;
    }
    if (RULE.test(line)) {
      parent.appendChild(document.createElement("hr"));
      i++;
      continue;
    }
    if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && QUOTE.test(lines[i])) inner.push(QUOTE.exec(lines[i++])[1]);
      const quote = document.createElement("blockquote");
      renderBlocks(inner, quote);
      parent.appendChild(quote);
      continue;
    }
    if (BULLET.test(line) || ORDERED.test(line)) {
      i = list(lines, i, parent);
      continue;
    }
    i = paragraph(lines, i, parent);
  }
}

/** A fenced code block; returns the index after it. */
function codeBlock(lines, i, marker, lang, parent) {
  const body = [];
  i++;
  const close = new RegExp(`^ {0,3}${marker[0] === "`" ? "`" : "~"}{${marker.length},}\\s*$`);
  while (i < lines.length && !close.test(lines[i])) body.push(lines[i++]);
  const pre = document.createElement("pre");
  const code = document.createElement("code");
  if (lang) {
    code.className = `language-${lang.replace(/[^\w-]/g, "")}`;
    pre.dataset.lang = lang;
  }
  code.textContent = body.join("\n");
  pre.appendChild(code);
  parent.appendChild(pre);
  return i + 1;
}

/** A bullet or numbered list; continuation lines that are indented join the item. */
function list(lines, i, parent) {
  const ordered = ORDERED.test(lines[i]);
  const pattern = ordered ? ORDERED : BULLET;
  const el = document.createElement(ordered ? "ol" : "ul");
  if (ordered) {
    const start = Number.parseInt(ORDERED.exec(lines[i])[1], 10);
    if (start !== 1) el.start = start;
  }
  while (i < lines.length) {
    const match = pattern.exec(lines[i]);
    if (!match) break;
    const itemLines = [ordered ? match[2] : match[1]];
    i++;
    while (i < lines.length && /^\s{2,}\S/.test(lines[i]) && !pattern.test(lines[i])) {
      itemLines.push(lines[i++].trim());
    }
    el.appendChild(inline("li", itemLines.join("\n")));
    while (i < lines.length && BLANK.test(lines[i]) && i + 1 < lines.length && pattern.test(lines[i + 1])) i++;
  }
  parent.appendChild(el);
  return i;
}

/** Consecutive lines up to a blank line or the start of another block. */
function paragraph(lines, i, parent) {
  const body = [lines[i++]];
  while (i < lines.length) {
    const line = lines[i];
    if (BLANK.test(line) || FENCE.test(line) || HEADING.test(line) || QUOTE.test(line)) break;
    if (BULLET.test(line) || ORDERED.test(line) || RULE.test(line)) break;
    body.push(line);
    i++;
  }
  parent.appendChild(inline("p", body.map((l) => l.trim()).join("\n")));
  return i;
}

/**
 * An element of `tag` holding the inline rendering of `text`.
 * @param {string} tag
 * @param {string} text
 */
function inline(tag, text) {
  const el = document.createElement(tag);
  appendInline(el, text, true);
  return el;
}

// [label](url "title"); the url may hold balanced parentheses, as Wikipedia links do.
const LINK = /^\[([^\]\n]+)\]\(\s*<?((?:[^\s()<>]|\([^\s()<>]*\))+)>?(?:\s+"[^"]*")?\s*\)/;

const DELIMS = [
  ["**", "strong"],
  ["__", "strong"],
  ["~~", "del"],
  ["*", "em"],
  ["_", "em"],
];

/**
 * Inline spans: code, emphasis, links. Unmatched markers stay as literal text.
 * @param {Node} parent
 * @param {string} text
 * @param {boolean} allowLinks false inside a link's text (no nested links)
 */
function appendInline(parent, text, allowLinks) {
  let plain = "";
  const flush = () => {
    if (plain) appendText(parent, plain);
    plain = "";
  };
  let i = 0;
  outer: while (i < text.length) {
    const ch = text[i];
    if (ch === "\\" && i + 1 < text.length && /[\\`*_{}[\]()#+\-.!~>]/.test(text[i + 1])) {
      plain += text[i + 1];
      i += 2;
      continue;
    }
    if (ch === "`") {
      const run = /^`+/.exec(text.slice(i))[0];
      const end = text.indexOf(run, i + run.length);
      if (end !== -1) {
        flush();
        const code = document.createElement("code");
        code.textContent = text.slice(i + run.length, end).replace(/^ (.*) $/s, "$1");
        parent.appendChild(code);
        i = end + run.length;
        continue;
      }
      plain += run;
      i += run.length;
      continue;
    }
    if (allowLinks && ch === "[") {
      const link = LINK.exec(text.slice(i));
      if (link) {
        flush();
        parent.appendChild(anchor(link[2], link[1]));
        i += link[0].length;
        continue;
      }
    }
    if (allowLinks && (ch === "h" || ch === "H") && /\W|^$/.test(text[i - 1] ?? "")) {
      const url = /^https?:\/\/[^\s<>"']+/i.exec(text.slice(i));
      if (url) {
        const href = url[0].replace(/[.,;:!?)\]]+$/, "");
        flush();
        parent.appendChild(anchor(href, null));
        i += href.length;
        continue;
      }
    }
    for (const [marker, tag] of DELIMS) {
      if (!text.startsWith(marker, i)) continue;
      const end = closingDelimiter(text, i, marker);
      if (end === -1) continue;
      flush();
      const el = document.createElement(tag);
      appendInline(el, text.slice(i + marker.length, end), allowLinks);
      parent.appendChild(el);
      i = end + marker.length;
      continue outer;
    }
    plain += ch;
    i++;
  }
  flush();
}

/**
 * Where the span opened by `marker` at `start` closes, or -1.
 * Openers must be followed, closers preceded, by non-space; `_` must sit at word edges.
 */
function closingDelimiter(text, start, marker) {
  const after = text[start + marker.length];
  if (after === undefined || /\s/.test(after)) return -1;
  if (marker[0] === "_" && /\w/.test(text[start - 1] ?? "")) return -1;
  let from = start + marker.length + 1;
  while (from <= text.length) {
    const end = text.indexOf(marker, from);
    if (end === -1) return -1;
    const next = text[end + marker.length] ?? "";
    const ok =
      !/\s/.test(text[end - 1]) &&
      !(marker.length === 1 && next === marker) &&
      !(marker[0] === "_" && /\w/.test(next));
    if (ok) return end;
    from = end + 1;
  }
  return -1;
}

/** Text with its newlines turned into `<br>`. */
function appendText(parent, text) {
  const parts = text.split("\n");
  parts.forEach((part, index) => {
    if (index > 0) parent.appendChild(document.createElement("br"));
    if (part) parent.appendChild(document.createTextNode(part));
  });
}

/**
 * A link if `href` is an absolute http(s) URL, else the text alone.
 * @param {string} href
 * @param {string | null} label Markdown label, or null to show the URL itself
 */
function anchor(href, label) {
  const url = safeUrl(href);
  const holder = url ? document.createElement("a") : document.createElement("span");
  if (url) {
    holder.href = url;
    holder.rel = "noopener noreferrer nofollow";
    holder.target = "_blank";
  }
  if (label === null) holder.textContent = href;
  else appendInline(holder, label, false);
  return holder;
}

/**
 * The normalised URL when it is absolute http or https, else null.
 * @param {string} href
 */
export function safeUrl(href) {
  try {
    const url = new URL(href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}
