// Invite fragments with a check (invitecode.js): every single-character
// change, insertion and deletion is refused, exhaustively, on sample invites;
// random changes pass at about the rate the construction promises.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc16, encodeInvite, decodeInvite, INVITE_LENGTH } from '../src/invitecode.js';
import { toB64u } from '../src/codec.js';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
// Also what a person or a mail program might put in: padding, the other base64, spaces, escapes.
const OTHERS = '=+/ .%#~';
const CHARS = ALPHABET + OTHERS;

const samples = () => [
  Uint8Array.from({ length: 32 }, (_, i) => i),
  new Uint8Array(32),
  new Uint8Array(32).fill(255),
  ...Array.from({ length: 5 }, () => crypto.getRandomValues(new Uint8Array(32))),
];

test('CRC-16/CCITT-FALSE check value', () => {
  assert.equal(crc16(new TextEncoder().encode('123456789')), 0x29b1);
  assert.equal(crc16(new Uint8Array(0)), 0xffff);
});

test('an invite round-trips and has its fixed length; a fixed vector', () => {
  for (const key of samples()) {
    const text = encodeInvite(key);
    assert.equal(text.length, INVITE_LENGTH);
    assert.match(text, /^[A-Za-z0-9_-]{46}$/);
    assert.deepEqual(decodeInvite(text), { key, legacy: false });
  }
  assert.equal(encodeInvite(Uint8Array.from({ length: 32 }, (_, i) => i)), 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8jsw');
  assert.throws(() => encodeInvite(new Uint8Array(31)), /32 bytes/);
});

test('every single-character substitution, insertion and deletion is refused (exhaustive)', () => {
  let tried = 0;
  for (const key of samples()) {
    const good = encodeInvite(key);
    for (let i = 0; i < good.length; i++) {
      // deletion
      assert.equal(decodeInvite(good.slice(0, i) + good.slice(i + 1)), null, `delete ${i}`);
      tried++;
      for (const c of CHARS) {
        if (c !== good[i]) {
          assert.equal(decodeInvite(good.slice(0, i) + c + good.slice(i + 1)), null, `substitute ${i} ${c}`);
          tried++;
        }
      }
    }
    for (let i = 0; i <= good.length; i++) {
      for (const c of CHARS) {
        assert.equal(decodeInvite(good.slice(0, i) + c + good.slice(i)), null, `insert ${i} ${c}`);
        tried++;
      }
    }
    // Two neighbours swapped: a burst of at most 12 bits, caught as well.
    for (let i = 0; i + 1 < good.length; i++) {
      if (good[i] === good[i + 1]) continue;
      assert.equal(decodeInvite(good.slice(0, i) + good[i + 1] + good[i] + good.slice(i + 2)), null, `swap ${i}`);
    }
  }
  assert.ok(tried > 8 * 46 * 70, `${tried} edits tried`);
});

test('random changes of several characters pass about 1 time in 2^16 or less', () => {
  const good = encodeInvite(crypto.getRandomValues(new Uint8Array(32)));
  const n = 300_000;
  let passed = 0;
  const rnd = new Uint32Array(4);
  for (let t = 0; t < n; t++) {
    crypto.getRandomValues(rnd);
    const chars = good.split('');
    const changes = 2 + (rnd[0] % 4);
    for (let k = 0; k < changes; k++) chars[(rnd[1] >>> (k * 6)) % chars.length] = ALPHABET[(rnd[2 + (k & 1)] >>> (k * 6)) & 63];
    const bad = chars.join('');
    if (bad !== good && decodeInvite(bad)) passed++;
  }
  // Expected about n / 2^20 (≈0.3); even 2^-16 would be ≈4.6. Twelve is far out in the tail of either.
  assert.ok(passed <= 12, `${passed} of ${n} random changes passed`);
});

test('an older invite (the bare key, 43 characters) is read as legacy; other lengths are damaged', () => {
  const key = crypto.getRandomValues(new Uint8Array(32));
  assert.deepEqual(decodeInvite(toB64u(key)), { key, legacy: true });
  for (const bad of ['', 'x', toB64u(key).slice(1), `${toB64u(key)}A`, `${encodeInvite(key)} `, ` ${encodeInvite(key)}`, null, 42]) {
    assert.equal(decodeInvite(bad), null, String(bad));
  }
});
