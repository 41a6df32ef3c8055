// Links in messages (links.js): only http(s), the text as sent, trailing
// punctuation left outside, and everything else plain text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { linkParts, safeHref } from '../src/links.js';

const links = (text) => linkParts(text).filter((p) => p.href).map((p) => p.text);

test('the parts joined give the text back, whatever it is', () => {
  for (const text of ['', 'plain', 'a https://x.org b', 'https://x.org', '((http://a.b/c))', 'http://', 'ü https://ü.example/ä ö']) {
    assert.equal(linkParts(text).map((p) => p.text).join(''), text);
  }
});

test('http and https only; javascript:, data:, file: and friends stay text', () => {
  for (const text of ['javascript:alert(1)', 'JavaScript:alert(1)', 'data:text/html,<b>x</b>', 'file:///etc/passwd',
    'ftp://x.org', 'mailto:a@b.c', 'www.example.org', 'javascript:http://x.org', 'xhttp://x.org']) {
    assert.deepEqual(links(text), [], text);
  }
  assert.equal(safeHref('javascript:alert(1)'), null);
  assert.equal(safeHref('http:///nohost'), 'http://nohost/'); // the URL parser's reading; a host is there
  assert.equal(safeHref('https://x.org/a b'), 'https://x.org/a%20b');
});

test('punctuation after a URL stays outside; balanced parentheses stay inside', () => {
  assert.deepEqual(links('see https://x.org/a.'), ['https://x.org/a']);
  assert.deepEqual(links('(see https://x.org/a), ok'), ['https://x.org/a']);
  assert.deepEqual(links('https://en.wikipedia.org/wiki/Tea_(drink)!'), ['https://en.wikipedia.org/wiki/Tea_(drink)']);
  assert.deepEqual(links('"http://x.org/q?a=1&b=2"'), ['http://x.org/q?a=1&b=2']);
  assert.deepEqual(links('two: http://a.org and HTTPS://B.ORG/x'), ['http://a.org', 'HTTPS://B.ORG/x']);
});

test('the href is the parsed address; the shown text is as sent', () => {
  const [p] = linkParts('HTTPS://Example.ORG/Path').filter((x) => x.href);
  assert.equal(p.text, 'HTTPS://Example.ORG/Path');
  assert.equal(p.href, 'https://example.org/Path');
});
