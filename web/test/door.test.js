// Passphrase rooms (envelope.js doorOf, door.js): the room id depends on the
// passphrase, the door id on the room name only, and the door's check tells
// a different passphrase without giving a verifier away.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deriveRoom, doorOf, passphraseKey } from '../src/envelope.js';
import { doorAvatar, doorCount } from '../src/door.js';
import { isId } from '../src/frames.js';

const FAST = { N: 2 ** 8, r: 8, p: 1, dkLen: 32 };

test('a passphrase room: its id depends on the passphrase, its door on the name alone', () => {
  const right = passphraseKey('Book Club', 'correct horse', FAST);
  const typo = passphraseKey('book  club ', 'correct horsE', FAST);
  assert.notEqual(deriveRoom(right).roomId, deriveRoom(typo).roomId);
  assert.equal(deriveRoom(right).roomId, deriveRoom(passphraseKey(' BOOK club', 'correct horse', FAST)).roomId);
  const a = doorOf('Book Club', right);
  const b = doorOf('book  club ', typo);
  assert.equal(a.doorId, b.doorId, 'the same door for the same name, whatever the passphrase');
  assert.notEqual(a.doorId, deriveRoom(right).roomId);
  assert.ok(isId(a.doorId) && a.doorId.length === 16);
  assert.match(a.check, /^[A-Za-z0-9_-]{2}$/);
  assert.notEqual(doorOf('Other Club', right).doorId, a.doorId);
  assert.throws(() => doorOf('   ', right), /empty/);
});

test('the check is 8 bits of the key: it tells different keys apart about 255 times in 256', () => {
  const checks = new Map();
  let differ = 0;
  const n = 4096;
  const base = doorOf('r', new Uint8Array(32)).check;
  for (let i = 0; i < n; i++) {
    const c = doorOf('r', crypto.getRandomValues(new Uint8Array(32))).check;
    checks.set(c, (checks.get(c) || 0) + 1);
    if (c !== base) differ++;
  }
  assert.ok(checks.size <= 256 && checks.size > 240, `${checks.size} distinct checks`);
  assert.ok(differ > n * 0.98, `${differ} of ${n} differ`);
});

test('who is at the door: people with this check and with another; one browser counts once, this one not at all', () => {
  const me = 'my-tag';
  const at = [
    doorAvatar('Ab', 'my-tag'), // this browser's other tab
    doorAvatar('Ab', 'bob'), doorAvatar('Ab', 'bob'), // Bob in two tabs
    doorAvatar('Zz', 'cy'),
    'garbage', null, 42,
  ];
  assert.deepEqual(doorCount(at, 'Ab', me), { same: 1, other: 2 });
  assert.deepEqual(doorCount(at, 'Zz', me), { same: 1, other: 2 });
  assert.deepEqual(doorCount([doorAvatar('Zz', 'cy')], 'Ab', me), { same: 0, other: 1 });
  assert.deepEqual(doorCount([], 'Ab', me), { same: 0, other: 0 });
});
