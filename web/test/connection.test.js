// The reconnect schedule (connection.js): a quick first retry, then about a
// second apart for a hub that restarts, then backoff with jitter up to 30 s.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, QUICK_TRIES } from '../src/connection.js';

const low = () => 0;
const high = () => 0.999999;

test('the first retry comes within a quarter of a second', () => {
  assert.ok(backoffDelay(0, low) >= 100 && backoffDelay(0, high) <= 250);
});

test('a hub that is back within about 11 s is found again within about a second', () => {
  // Whatever the jitter, no gap between attempts exceeds 1.25 s during the first 11 s.
  for (const random of [low, high, Math.random]) {
    let t = 0;
    let n = 0;
    while (t < 11000) {
      const d = backoffDelay(n++, random);
      assert.ok(d <= 1250, `attempt ${n - 1}: ${d} ms`);
      t += d;
    }
  }
  assert.ok(QUICK_TRIES >= 15);
});

test('then exponential backoff with jitter, capped at 30 s', () => {
  const n = QUICK_TRIES;
  assert.equal(backoffDelay(n, low), 1000);
  assert.equal(backoffDelay(n, high), 2000);
  assert.equal(backoffDelay(n + 1, low), 2000);
  assert.ok(backoffDelay(n + 3, low) > backoffDelay(n + 2, high) - 1);
  for (const k of [n + 5, n + 20, n + 100, 1e6]) {
    assert.ok(backoffDelay(k, low) === 15000 && backoffDelay(k, high) <= 30000, String(k));
  }
});

test('jitter spreads the retries of many phones', () => {
  for (const n of [0, 1, QUICK_TRIES + 2]) {
    const seen = new Set(Array.from({ length: 200 }, () => backoffDelay(n)));
    assert.ok(seen.size > 50, `attempt ${n}: ${seen.size} distinct delays`);
  }
});
