// Markdown from the model, a memory or a document, turned into DOM nodes safely. Nothing here
// parses HTML: every piece of the text becomes a text node or one of a fixed set of elements made
// with createElement (p, br, em, strong, del, code, pre, h3-h6, ul, ol, li, blockquote, hr, a).
// HTML in the text (<script>, <img onerror=...>) shows as the characters it is. Links keep only
// absolute http(s) and mailto URLs, open in a new tab without a referrer, and are never followed
// or fetched by the page: an image becomes a link to it, so nothing loads until the user clicks.
//
// Every scan below is linear in the text or bounded per position, and nesting stops at MAX_DEPTH,
// so a long or hostile text cannot stall the page.

const MAX_DEPTH = 8;
const MAX_LINK_TEXT = 500;
const MAX_URL = 4096;
const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);
const ESCAPABLE = /[!-/:-@[-`{-~]/;
const WORD = /[\p{L}\p{N}]/u;

const FENCE = /^ {0,3}(`{3,}|~{3,})(.*)$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*))?$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( {0,3})(?:([-*+])|(\d{1,9})[.)])([ \t]+|$)(.*)$/;

export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = String(text ?? "")
    .replace(/\r\n?/g, "\n")
    .split("\n")
    .map(expandLeadingTabs);
  renderBlocks(lines, fragment, 0);
  return fragment;
}

// The URL as the link will use it, or null when it is not an absolute http(s) or mailto URL.
export function safeHref(raw) {
  const text = String(raw ?? "").trim();
  if (!text || text.length > MAX_URL) return null;
  let url;
  try {
    url = new URL(text);
  } catch {
    return null;
  }
  return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
}

export function link(href, ...children) {
  const anchor = document.createElement("a");
  anchor.href = href;
  anchor.rel = "noopener noreferrer nofollow";
  anchor.target = "_blank";
  anchor.referrerPolicy = "no-referrer";
  anchor.append(...children);
  return anchor;
}

function expandLeadingTabs(line) {
  const match = /^[ \t]+/.exec(line);
  if (!match || !match[0].includes("\t")) return line;
  let width = 0;
  for (const character of match[0]) width = character === "\t" ? width + 4 - (width % 4) : width + 1;
  return " ".repeat(width) + line.slice(match[0].length);
}

function indentOf(line) {
  return line.length - line.trimStart().length;
}

function isBlank(line) {
  return line.trim() === "";
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function element(tag, ...children) {
  const node = document.createElement(tag);
  node.append(...children);
  return node;
}

// -- blocks ----------------------------------------------------------------------------------------

function renderBlocks(lines, parent, depth) {
  if (depth > MAX_DEPTH) {
    parent.append(element("p", lines.join("\n")));
    return;
  }
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i += 1;
      continue;
    }
    let match = FENCE.exec(line);
    if (match) {
      i = renderFence(lines, i, match, parent);
      continue;
    }
    match = HEADING.exec(line);
    if (match) {
      const heading = element(`h${Math.min(6, match[1].length + 2)}`);
      renderInline(stripClosingHashes(match[2] ?? ""), heading, depth);
      parent.append(heading);
      i += 1;
      continue;
    }
    if (RULE.test(line)) {
      parent.append(element("hr"));
      i += 1;
      continue;
    }
    if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && !isBlank(lines[i])) {
        const quoted = QUOTE.exec(lines[i]);
        inner.push(quoted ? quoted[1] : lines[i]);
        i += 1;
      }
      const quote = element("blockquote");
      renderBlocks(inner, quote, depth + 1);
      parent.append(quote);
      continue;
    }
    if (ITEM.test(line)) {
      i = renderList(lines, i, parent, depth);
      continue;
    }
    const paragraph = [];
    while (i < lines.length && !isBlank(lines[i]) && (paragraph.length === 0 || !startsBlock(lines[i]))) {
      paragraph.push(lines[i].trim());
      i += 1;
    }
    const p = element("p");
    renderInline(paragraph.join("\n"), p, depth);
    parent.append(p);
  }
}

function stripClosingHashes(text) {
  let end = text.trimEnd();
  let cut = end.length;
  while (cut > 0 && end[cut - 1] === "#") cut -= 1;
  if (cut < end.length && (cut === 0 || end[cut - 1] === " " || end[cut - 1] === "\t")) end = end.slice(0, cut);
  return end.trim();
}

function renderFence(lines, start, match, parent) {
  const fence = match[1];
  const body = [];
  let i = start + 1;
  while (i < lines.length) {
    const closing = /^ {0,3}(`{3,}|~{3,})[ \t]*$/.exec(lines[i]);
    if (closing && closing[1][0] === fence[0] && closing[1].length >= fence.length) {
      i += 1;
      break;
    }
    body.push(lines[i]);
    i += 1;
  }
  parent.append(element("pre", element("code", body.join("\n"))));
  return i;
}

function renderList(lines, start, parent, depth) {
  const first = ITEM.exec(lines[start]);
  const ordered = first[3] !== undefined;
  const list = element(ordered ? "ol" : "ul");
  if (ordered && first[3] !== "1") list.start = Number.parseInt(first[3], 10);
  let i = start;
  while (i < lines.length) {
    const item = ITEM.exec(lines[i]);
    if (!item || (item[3] !== undefined) !== ordered) break;
    const marker = item[2] ?? `${item[3]}.`;
    const contentIndent = item[1].length + marker.length + Math.max(1, Math.min(item[4].length, 4));
    const body = [item[5]];
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      if (isBlank(line)) {
        let next = i + 1;
        while (next < lines.length && isBlank(lines[next])) next += 1;
        if (next < lines.length && indentOf(lines[next]) >= contentIndent) {
          body.push(...lines.slice(i, next).map(() => ""));
          i = next;
          continue;
        }
        break;
      }
      if (indentOf(line) >= contentIndent) {
        body.push(line.slice(contentIndent));
      } else if (startsBlock(line)) {
        break;
      } else {
        body.push(line.trim()); // a paragraph's lazy continuation
      }
      i += 1;
    }
    const li = element("li");
    renderBlocks(body, li, depth + 1);
    // An item without blank lines in it reads as lines, not as paragraphs in a box.
    if (!body.some(isBlank)) {
      for (const child of [...li.children]) if (child.nodeName === "P") child.replaceWith(...child.childNodes);
    }
    list.append(li);
    // Blank lines between items belong to the list.
    let next = i;
    while (next < lines.length && isBlank(lines[next])) next += 1;
    if (next > i && next < lines.length) {
      const sibling = ITEM.exec(lines[next]);
      if (sibling && (sibling[3] !== undefined) === ordered) i = next;
    }
  }
  parent.append(list);
  return i;
}

// -- inline ----------------------------------------------------------------------------------------

const EMPHASIS = [
  { marker: "**", tag: "strong" },
  { marker: "__", tag: "strong", word: true },
  { marker: "~~", tag: "del" },
  { marker: "*", tag: "em" },
  { marker: "_", tag: "em", word: true },
];

function renderInline(text, parent, depth, inLink = false) {
  if (depth > MAX_DEPTH) {
    parent.append(text);
    return;
  }
  // Delimiters known to have no closer from some point on: not looked for again (keeps it linear).
  const unclosed = new Set();
  let buffer = "";
  const flush = () => {
    if (buffer) parent.append(document.createTextNode(buffer));
    buffer = "";
  };
  let i = 0;
  outer: while (i < text.length) {
    const c = text[i];
    if (c === "\\" && i + 1 < text.length && ESCAPABLE.test(text[i + 1])) {
      buffer += text[i + 1];
      i += 2;
      continue;
    }
    if (c === "\n") {
      flush();
      parent.append(element("br"));
      i += 1;
      continue;
    }
    if (c === "`") {
      let run = 1;
      while (text[i + run] === "`") run += 1;
      const close = unclosed.has(`\`${run}`) ? -1 : findTicks(text, i + run, run);
      if (close < 0) {
        unclosed.add(`\`${run}`);
        buffer += "`".repeat(run);
        i += run;
        continue;
      }
      flush();
      let code = text.slice(i + run, close).replace(/\n/g, " ");
      if (code.length > 2 && code.startsWith(" ") && code.endsWith(" ") && code.trim()) code = code.slice(1, -1);
      parent.append(element("code", code));
      i = close + run;
      continue;
    }
    if (!inLink && (c === "[" || (c === "!" && text[i + 1] === "[")) && !unclosed.has("](")) {
      const image = c === "!";
      const found = matchLink(text, image ? i + 1 : i);
      if (found === null && text.indexOf("](", i) < 0) unclosed.add("](");
      if (found) {
        flush();
        const href = safeHref(found.url);
        if (image) {
          const alt = found.text.trim() || found.url;
          parent.append(href ? link(href, `Image: ${alt}`) : alt);
        } else if (href) {
          const anchor = link(href);
          if (found.title) anchor.title = found.title;
          renderInline(found.text, anchor, depth + 1, true);
          parent.append(anchor);
        } else {
          renderInline(found.text, parent, depth + 1, true);
        }
        i = found.end;
        continue;
      }
    }
    if (!inLink && c === "<") {
      const auto = /<((?:https?:\/\/|mailto:)[^\s<>]{1,4096})>/y;
      auto.lastIndex = i;
      const found = auto.exec(text);
      const href = found && safeHref(found[1]);
      if (href) {
        flush();
        parent.append(link(href, found[1]));
        i = auto.lastIndex;
        continue;
      }
    }
    if (!inLink && c === "h" && (i === 0 || !WORD.test(text[i - 1]))) {
      const bare = /https?:\/\/[^\s<>"'`]{1,4096}/y;
      bare.lastIndex = i;
      const found = bare.exec(text);
      if (found) {
        const url = trimUrl(found[0]);
        const href = safeHref(url);
        if (href && url.length > "https://".length) {
          flush();
          parent.append(link(href, url));
          i += url.length;
          continue;
        }
      }
    }
    if (c === "*" || c === "_" || c === "~") {
      for (const kind of EMPHASIS) {
        if (!text.startsWith(kind.marker, i) || unclosed.has(kind.marker)) continue;
        const after = text[i + kind.marker.length];
        if (after === undefined || /\s/.test(after) || after === kind.marker[0]) continue;
        if (kind.word && i > 0 && WORD.test(text[i - 1])) continue;
        const close = findCloser(text, i + kind.marker.length, kind);
        if (close < 0) {
          unclosed.add(kind.marker);
          continue;
        }
        flush();
        const node = element(kind.tag);
        renderInline(text.slice(i + kind.marker.length, close), node, depth + 1, inLink);
        parent.append(node);
        i = close + kind.marker.length;
        continue outer;
      }
    }
    buffer += c;
    i += 1;
  }
  flush();
}

function findTicks(text, from, run) {
  const ticks = "`".repeat(run);
  let at = text.indexOf(ticks, from);
  while (at >= 0) {
    let end = at + run;
    while (text[end] === "`") end += 1;
    if (end - at === run) return at;
    at = text.indexOf(ticks, end);
  }
  return -1;
}

function findCloser(text, from, kind) {
  const { marker } = kind;
  const single = marker.length === 1;
  let at = text.indexOf(marker, from + 1);
  while (at >= 0) {
    const before = text[at - 1];
    const after = text[at + marker.length];
    const ok =
      !/\s/.test(before) &&
      (!single || (before !== marker && after !== marker)) &&
      (!kind.word || after === undefined || !WORD.test(after));
    if (ok) return at;
    at = text.indexOf(marker, at + 1);
  }
  return -1;
}

// [text](url "title") starting at text[start] === "[": {text, url, title, end} or null.
function matchLink(text, start) {
  let close = -1;
  for (let j = start + 1; j < text.length && j <= start + MAX_LINK_TEXT; j += 1) {
    if (text[j] === "\\") {
      j += 1;
    } else if (text[j] === "]") {
      close = j;
      break;
    } else if (text[j] === "[" || text[j] === "\n") {
      return null;
    }
  }
  if (close < 0 || text[close + 1] !== "(") return null;
  const destination = /[ \t]*(?:<([^<>\n]{0,4096})>|((?:[^\s()]|\([^\s()]{0,4096}\)){0,4096}))(?:[ \t]+"([^"\n]{0,500})")?[ \t]*\)/y;
  destination.lastIndex = close + 2;
  const found = destination.exec(text);
  if (!found) return null;
  return {
    text: text.slice(start + 1, close),
    url: found[1] ?? found[2] ?? "",
    title: found[3] ?? "",
    end: destination.lastIndex,
  };
}

function trimUrl(url) {
  let end = url.length;
  while (end > 0) {
    const last = url[end - 1];
    if (".,;:!?*_~'\"".includes(last)) {
      end -= 1;
    } else if (last === ")") {
      const body = url.slice(0, end);
      if (body.split("(").length >= body.split(")").length) break;
      end -= 1;
    } else {
      break;
    }
  }
  return url.slice(0, end);
}
