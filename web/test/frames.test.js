// The frames the page sends (frames.js): exact shapes of PROTOCOL.md section 2,
// the checks the relay would make, and the length the size counter relies on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  HANDLE, isId, joinFrame, leaveFrame, pingFrame, messageFrame, typingFrame, reactionFrame,
  encodeFrame, messageFrameLength, REQUEST_ERRORS,
} from '../src/frames.js';
import { chatFrameLength, seal, chatEnvelope, deriveRoom } from '../src/envelope.js';

const KEY = Uint8Array.from({ length: 32 }, (_, i) => 3 * i);

test('join carries the room id, a random-looking user id, the neutral handle and the sealed profile', () => {
  const f = joinFrame({ room: 'AbC-_123', userId: 'u_1', avatar: 'n.c' });
  assert.equal(encodeFrame(f), '{"type":"join","data":{"room":"AbC-_123","user":{"id":"u_1","name":"member","avatar":"n.c"}}}');
  assert.equal(HANDLE, 'member');
  assert.equal(joinFrame({ room: 'r', userId: 'u' }).data.user.avatar, null);
  assert.ok(!('since' in joinFrame({ room: 'r', userId: 'u' }).data), 'no since unless asked');
});

test('join with since (catch-up): empty for everything retained, else a message id', () => {
  assert.equal(joinFrame({ room: 'r', userId: 'u', since: '' }).data.since, '');
  assert.equal(joinFrame({ room: 'r', userId: 'u', since: 'm-42' }).data.since, 'm-42');
  for (const since of ['has space', 'x'.repeat(65), 7, null]) {
    assert.throws(() => joinFrame({ room: 'r', userId: 'u', since }), /since/, String(since));
  }
});

test('join refuses ids the relay would refuse', () => {
  for (const room of ['', 'a b', 'x'.repeat(65), 'ü', 'a/b']) {
    assert.throws(() => joinFrame({ room, userId: 'u' }), /room id/, room);
  }
  assert.throws(() => joinFrame({ room: 'r', userId: 'u.v' }), /user id/);
  assert.throws(() => joinFrame({ room: 'r', userId: 'u', avatar: 'x'.repeat(513) }), /avatar/);
  assert.ok(isId('x'.repeat(64)) && !isId('x'.repeat(65)) && !isId(undefined));
});

test('leave, ping, typing', () => {
  assert.equal(encodeFrame(leaveFrame()), '{"type":"leave"}');
  assert.equal(encodeFrame(pingFrame()), '{"type":"ping"}');
  assert.equal(encodeFrame(typingFrame(true)), '{"type":"typing","data":{"isTyping":true}}');
  assert.equal(encodeFrame(typingFrame(0)), '{"type":"typing","data":{"isTyping":false}}', 'always a boolean');
});

test('message carries sealed content only, in the relay\'s content rule', () => {
  assert.equal(encodeFrame(messageFrame('abc.DEF-_')), '{"type":"message","data":{"content":"abc.DEF-_"}}');
  for (const bad of ['', 'a..b', 'a.b.c.d.e.f.g.h.i', 'plain text', '{"t":"x"}', 42]) {
    assert.throws(() => messageFrame(bad), /content/, String(bad));
  }
  const { messageKey } = deriveRoom(KEY);
  const sealed = seal(messageKey, 'msg', chatEnvelope('hi', 'Ada'));
  assert.equal(messageFrame(sealed).data.content, sealed);
});

test('reaction: message id rule and the emoji rule (1-32 bytes, no whitespace or control)', () => {
  assert.equal(encodeFrame(reactionFrame('m1', '👍')), '{"type":"reaction","data":{"messageId":"m1","emoji":"👍"}}');
  assert.deepEqual(reactionFrame('m1', '❤️').data.emoji, '❤️');
  assert.throws(() => reactionFrame('m 1', '👍'), /message id/);
  for (const bad of ['', ' ', '👍 ', '\u0007', '🎉'.repeat(9)]) assert.throws(() => reactionFrame('m', bad), /emoji/);
});

test('the size counter\'s frame length is the encoded frame\'s length', () => {
  for (const n of [0, 1, 100, 9000]) {
    assert.equal(messageFrameLength(n), Buffer.byteLength(encodeFrame({ type: 'message', data: { content: 'x'.repeat(n) } })));
  }
  const { messageKey } = deriveRoom(KEY);
  for (const text of ['', 'a', 'ünïcödé 👋\n"quoted"', 'x'.repeat(5000)]) {
    const frame = encodeFrame(messageFrame(seal(messageKey, 'msg', chatEnvelope(text, 'Grace Hopper'))));
    assert.equal(chatFrameLength(text, 'Grace Hopper'), Buffer.byteLength(frame));
  }
});

test('errors that answer the oldest budgeted request', () => {
  assert.ok(REQUEST_ERRORS.has('RATE_LIMITED') && REQUEST_ERRORS.has('INVALID_CONTENT'));
  assert.ok(!REQUEST_ERRORS.has('USER_ID_TAKEN') && !REQUEST_ERRORS.has('ROOM_FULL'));
});
