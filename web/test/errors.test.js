// Error sentences (the reconnect schedule is in connection.test.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { errorSentence, retrySeconds, closeSentence } from '../src/errors.js';

const CONTRACT_CODES = [
  'INVALID_JSON', 'INVALID_MESSAGE', 'INVALID_ROOM_ID', 'INVALID_USER_ID', 'INVALID_USERNAME',
  'INVALID_AVATAR', 'INVALID_CONTENT', 'INVALID_EMOJI', 'USER_ID_TAKEN', 'ROOM_FULL',
  'TOO_MANY_ROOMS', 'NOT_IN_ROOM', 'RATE_LIMITED', 'MESSAGE_TOO_LARGE', 'IP_BLOCKED',
  'TOO_MANY_CONNECTIONS', 'SERVER_FULL', 'ORIGIN_NOT_ALLOWED',
];

test('every error code of the contract has its own sentence', () => {
  const seen = new Set();
  for (const code of CONTRACT_CODES) {
    const s = errorSentence({ code, message: 'x' });
    assert.ok(!s.includes(code) && !s.includes('reported a problem'), code);
    assert.match(s, /^[A-Z].*\.$/, code);
    seen.add(s);
  }
  assert.equal(seen.size, CONTRACT_CODES.length);
  assert.match(errorSentence({ code: 'SOMETHING_NEW' }), /SOMETHING_NEW/);
});

test('RATE_LIMITED says when sending works again, from the hub\'s message', () => {
  assert.equal(
    errorSentence({ code: 'RATE_LIMITED', message: 'too many message frames; retry in 3 s' }),
    'Slow down; you can send again in 3 s.',
  );
  assert.equal(retrySeconds('retry in 1500 ms'), 2);
  assert.equal(retrySeconds('too many messages; slow down'), 2);
  assert.equal(retrySeconds('retry in 0 s'), 1);
});

test('close codes the hub uses have sentences; ordinary closes none', () => {
  for (const code of [1001, 1008, 1009, 1013]) assert.ok(closeSentence(code).length > 10, String(code));
  assert.equal(closeSentence(1000), '');
  assert.equal(closeSentence(1006), '');
});
