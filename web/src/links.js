// Web addresses in a message become links, safely: only http and https, the
// text exactly as sent, rel="noopener noreferrer", and nothing fetched for a
// preview. Anything else that looks like a URL (javascript:, data:, file:)
// stays plain text.

const CANDIDATE = /\bhttps?:\/\/[^\s<>"]+/gi;
const TRAILING = /[.,;:!?'"»”’\]}>]/;

/** Where a URL written in running text ends: trailing punctuation and unbalanced closers stay outside. */
function trim(url) {
  let end = url.length;
  while (end > 0) {
    const c = url[end - 1];
    if (c === ')') {
      // A closer that matches an opener inside the URL belongs to it (…/Foo_(bar)).
      const head = url.slice(0, end);
      if (count(head, '(') >= count(head, ')')) break;
    } else if (!TRAILING.test(c)) break;
    end--;
  }
  return url.slice(0, end);
}

const count = (s, c) => s.split(c).length - 1;

/** The address a link may point to, or null: an absolute http(s) URL with a host. */
export function safeHref(text) {
  let u;
  try {
    u = new URL(text);
  } catch {
    return null;
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || !u.hostname) return null;
  return u.href;
}

/** `text` split into parts `{text}` and `{text, href}` (links), in order; joined they give `text` back. */
export function linkParts(text) {
  const parts = [];
  let at = 0;
  for (const m of text.matchAll(CANDIDATE)) {
    const url = trim(m[0]);
    const href = safeHref(url);
    if (!href || (m.index > 0 && /[\w/:.@-]/.test(text[m.index - 1]))) continue;
    if (m.index > at) parts.push({ text: text.slice(at, m.index) });
    parts.push({ text: url, href });
    at = m.index + url.length;
  }
  if (at < text.length || !parts.length) parts.push({ text: text.slice(at) });
  return parts;
}

/** The nodes of `text` for a message body: text nodes and safe links. */
export function linkNodes(text) {
  return linkParts(text).map((p) => {
    if (!p.href) return document.createTextNode(p.text);
    const a = document.createElement('a');
    a.href = p.href;
    a.textContent = p.text;
    a.rel = 'noopener noreferrer';
    a.target = '_blank';
    return a;
  });
}
