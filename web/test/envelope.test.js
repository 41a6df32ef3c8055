// Unit tests of the envelope and the key derivation (node's test runner).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import nodeCrypto from 'node:crypto';
import {
  newRoomKey, encodeKey, decodeKey, deriveRoom, doorOf, normalizeRoomName, passphraseKey, passphraseKeyAsync,
  seal, open, sealedLength, chatFrameLength, chatEnvelope, SCRYPT_PARAMS, NONCE_BYTES,
} from '../src/envelope.js';
import { toB64u, fromB64u } from '../src/codec.js';

const KEY = Uint8Array.from({ length: 32 }, (_, i) => i);
const NONCE = Uint8Array.from({ length: 24 }, (_, i) => 0x40 + i);

/** Flips one bit of the byte at `index` of base64url segment `seg` of `content`. */
function flip(content, seg, index) {
  const parts = content.split('.');
  const bytes = fromB64u(parts[seg]);
  bytes[index] ^= 1;
  parts[seg] = toB64u(bytes);
  return parts.join('.');
}

test('base64url round trip and strictness', () => {
  for (let n = 0; n < 40; n++) {
    const bytes = nodeCrypto.randomBytes(n);
    const text = toB64u(bytes);
    assert.equal(text, Buffer.from(bytes).toString('base64url'));
    assert.deepEqual(fromB64u(text), new Uint8Array(bytes));
  }
  assert.equal(fromB64u('abc='), null, 'padding');
  assert.equal(fromB64u('ab+/'), null, 'standard alphabet');
  assert.equal(fromB64u('abcde'), null, 'length 1 mod 4');
  assert.equal(fromB64u('AB'), null, 'non-zero trailing bits');
});

test('a sealed message opens under its key and carries text and name', () => {
  const { messageKey } = deriveRoom(newRoomKey());
  const content = seal(messageKey, 'msg', chatEnvelope('hello, wörld 👋', 'Ada'));
  assert.match(content, /^[A-Za-z0-9_-]{32}\.[A-Za-z0-9_-]+$/);
  assert.deepEqual(open(messageKey, 'msg', content), { ok: true, value: { t: 'hello, wörld 👋', n: 'Ada' } });
  assert.ok(!content.includes('Ada') && !content.includes('hello'));
});

test('another key cannot open it', () => {
  const a = deriveRoom(newRoomKey()).messageKey;
  const b = deriveRoom(newRoomKey()).messageKey;
  assert.deepEqual(open(b, 'msg', seal(a, 'msg', { t: 'x', n: 'y' })), { ok: false, reason: 'auth' });
});

test('the kind is bound: a profile does not open as a message', () => {
  const { messageKey } = deriveRoom(KEY);
  assert.equal(open(messageKey, 'msg', seal(messageKey, 'profile', { n: 'Ada' })).reason, 'auth');
});

test('every tampered bit of ciphertext, tag or nonce is detected', () => {
  const { messageKey } = deriveRoom(KEY);
  const content = seal(messageKey, 'msg', { t: 'pay 10', n: 'Bo' });
  const sealedLen = fromB64u(content.split('.')[1]).length;
  for (let i = 0; i < sealedLen; i++) {
    assert.equal(open(messageKey, 'msg', flip(content, 1, i)).reason, 'auth', `ciphertext byte ${i}`);
  }
  for (let i = 0; i < NONCE_BYTES; i++) {
    assert.equal(open(messageKey, 'msg', flip(content, 0, i)).reason, 'auth', `nonce byte ${i}`);
  }
  const [n, c] = content.split('.');
  assert.equal(open(messageKey, 'msg', `${n}.${c.slice(0, -4)}`).ok, false, 'truncated');
  for (const bad of ['', 'abc', `${n}`, `${n}.${c}.${c}`, `${n.slice(2)}.${c}`, `${n}.AAAA`, 42, null]) {
    assert.equal(open(messageKey, 'msg', bad).reason, 'malformed', String(bad));
  }
});

test('nonces never repeat over many messages', () => {
  const { messageKey } = deriveRoom(newRoomKey());
  const seen = new Set();
  for (let i = 0; i < 20000; i++) {
    const nonce = seal(messageKey, 'msg', { t: 'same text', n: 'same name' }).split('.')[0];
    assert.equal(nonce.length, 32);
    seen.add(nonce);
  }
  assert.equal(seen.size, 20000);
});

test('fixed vector: room id, message key and one sealed message', () => {
  const { roomId, messageKey } = deriveRoom(KEY);
  assert.equal(roomId, 'pcsAc-4RLz3OuxsE');
  assert.equal(toB64u(messageKey), 'QsPSq97NARyugnzpzKnBxhca41U5wAQrtMw0nH8N7_I');
  assert.equal(seal(messageKey, 'msg', { t: 'hi', n: 'Ada' }, NONCE), 'QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZX.pmGW3V_3cFeyTD5chBh93R8Jo6NRN-Mxj0FltMIFeHj16jkH');
  assert.equal(encodeKey(KEY), 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8');
});

test('HKDF agrees with node:crypto', () => {
  const key = newRoomKey();
  const { roomId, messageKey } = deriveRoom(key);
  const salt = Buffer.from('rtce2ee-whisper/v1');
  const id = Buffer.from(nodeCrypto.hkdfSync('sha256', key, salt, Buffer.from('room id'), 12));
  const mk = Buffer.from(nodeCrypto.hkdfSync('sha256', key, salt, Buffer.from('message key'), 32));
  assert.equal(roomId, id.toString('base64url'));
  assert.deepEqual(Buffer.from(messageKey), mk);
  assert.match(roomId, /^[A-Za-z0-9_-]{16}$/);
});

/** HChaCha20 from OpenSSL's ChaCha20 keystream: rounds(S) = block - S, word by word. */
function hchacha20(key, nonce16) {
  const block = nodeCrypto.createCipheriv('chacha20', key, nonce16).update(Buffer.alloc(64));
  const state = Buffer.concat([Buffer.from('expand 32-byte k'), key, nonce16]);
  const out = Buffer.alloc(32);
  [0, 1, 2, 3, 12, 13, 14, 15].forEach((w, i) => {
    out.writeUInt32LE((block.readUInt32LE(w * 4) - state.readUInt32LE(w * 4)) >>> 0, i * 4);
  });
  return out;
}

test('XChaCha20-Poly1305 agrees with OpenSSL ChaCha20-Poly1305 on the HChaCha20 subkey', () => {
  const { messageKey } = deriveRoom(newRoomKey());
  const nonce = nodeCrypto.randomBytes(24);
  const content = seal(messageKey, 'msg', { t: 'cross-check', n: 'Cy' }, new Uint8Array(nonce));
  const sealed = Buffer.from(fromB64u(content.split('.')[1]));
  const subkey = hchacha20(Buffer.from(messageKey), nonce.subarray(0, 16));
  const iv = Buffer.concat([Buffer.alloc(4), nonce.subarray(16)]);
  const d = nodeCrypto.createDecipheriv('chacha20-poly1305', subkey, iv, { authTagLength: 16 });
  d.setAAD(Buffer.from('rtce2ee-whisper/v1/msg'));
  d.setAuthTag(sealed.subarray(-16));
  const plain = Buffer.concat([d.update(sealed.subarray(0, -16)), d.final()]);
  assert.equal(plain.toString(), '{"t":"cross-check","n":"Cy"}');
});

test('invite key text round trip and rejects', () => {
  const key = newRoomKey();
  assert.deepEqual(decodeKey(encodeKey(key)), key);
  assert.equal(encodeKey(key).length, 43);
  assert.equal(decodeKey('short'), null);
  assert.equal(decodeKey(`${encodeKey(key)}AA`), null);
});

test('passphrase key: scrypt as documented, agrees with node:crypto, room name normalised', async () => {
  assert.deepEqual(SCRYPT_PARAMS, { N: 32768, r: 8, p: 1, dkLen: 32 });
  const small = { N: 1024, r: 8, p: 1, dkLen: 32 };
  const k = passphraseKey('  Book  Club ', 'correct horse', small);
  const expected = nodeCrypto.scryptSync('correct horse', 'rtce2ee-whisper/v1/room/book club', 32, { N: 1024, r: 8, p: 1 });
  assert.deepEqual(Buffer.from(k), expected);
  assert.deepEqual(passphraseKey('book club', 'correct horse', small), k);
  assert.notDeepEqual(passphraseKey('book club', 'correct horsE', small), k);
  assert.notDeepEqual(passphraseKey('book clubs', 'correct horse', small), k);
  assert.deepEqual(await passphraseKeyAsync('BOOK CLUB', 'correct horse', small), k);
  assert.equal(normalizeRoomName('Ｂｏｏｋ\tClub'), 'book club');
  assert.throws(() => passphraseKey(' ', 'x', small));
  assert.throws(() => passphraseKey('room', '', small));
});

test('fixed vector: passphrase key at the real parameters', () => {
  const key = passphraseKey('Book Club', 'correct horse battery staple');
  // node:crypto.scryptSync gives the same key (checked when the vector was made).
  assert.equal(toB64u(key), '678uZdoS171uF-_Q4o6GEsRIow4u9YB1fDZVEsJTOf8');
  assert.equal(deriveRoom(key).roomId, '-l5KWrnGLCQmzoKc');
});

test('frame length prediction is exact', () => {
  const { messageKey } = deriveRoom(KEY);
  for (const text of ['', 'a', 'ab', 'abc', 'quote " and \\ and \n', '👋 ünïcødé', 'x'.repeat(7000)]) {
    const content = seal(messageKey, 'msg', chatEnvelope(text, 'Ada Lovelace'));
    const frame = JSON.stringify({ type: 'message', data: { content } });
    assert.equal(chatFrameLength(text, 'Ada Lovelace'), Buffer.byteLength(frame), JSON.stringify(text.slice(0, 20)));
    assert.equal(sealedLength(Buffer.byteLength(JSON.stringify(chatEnvelope(text, 'Ada Lovelace')))), content.length);
  }
});

test('passphrase rooms: the id comes from the key (so the passphrase), the door from the name alone', () => {
  const small = { N: 1024, r: 8, p: 1, dkLen: 32 };
  const rightKey = passphraseKey('Book Club', 'right', small);
  const right = deriveRoom(rightKey);
  const wrong = deriveRoom(passphraseKey('book  club', 'wrong', small));
  assert.notEqual(right.roomId, wrong.roomId);
  assert.notDeepEqual(right.messageKey, wrong.messageKey);
  const id = nodeCrypto.hkdfSync('sha256', rightKey, 'rtce2ee-whisper/v1', 'room id', 12);
  assert.equal(right.roomId, Buffer.from(id).toString('base64url'));
  const door = nodeCrypto.hkdfSync('sha256', 'book club', 'rtce2ee-whisper/v1', 'room name id', 12);
  assert.equal(doorOf('Book Club', rightKey).doorId, Buffer.from(door).toString('base64url'));
  const check = nodeCrypto.hkdfSync('sha256', rightKey, 'rtce2ee-whisper/v1', 'door check', 1);
  assert.equal(doorOf('Book Club', rightKey).check, Buffer.from(check).toString('base64url'));
});
