// The status page's figures (status-data.js): the hour's message count from
// successive totals, words and verdicts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HourCount, bytes, duration, memoryVerdict, queueVerdict, spanLabel, POINTS } from '../src/status-data.js';

const MIN = 60_000;

test('messages in the last hour from a running total, across a hub restart', () => {
  const h = new HourCount(0);
  h.add(1000, 0); // what the hub relayed before this page opened does not count
  assert.equal(h.count(0), 0);
  h.add(1003, 2000);
  h.add(1010, 4000);
  assert.equal(h.count(4000), 10);
  assert.equal(h.covers(4000), 'since this page opened 4 s ago');
  h.add(4, 6000); // restarted: counts from zero again
  assert.equal(h.count(6000), 14);
  h.add(4, 61 * MIN);
  assert.equal(h.count(61 * MIN), 0, 'an hour later the old messages are out of the window');
  assert.ok(h.full(61 * MIN));
  assert.equal(h.covers(61 * MIN), 'in the last hour');
});

test('the window stays bounded however long the page is open', () => {
  const h = new HourCount(0);
  for (let i = 0; i < 10_000; i++) h.add(i, i * 2000);
  assert.ok(h.steps.length <= 1800, String(h.steps.length));
  assert.equal(h.count(9999 * 2000), 1800);
});

test('plain words', () => {
  assert.equal(duration(472), '7 min 52 s');
  assert.equal(duration(42), '42 s');
  assert.equal(duration(3 * 3600 + 300), '3 h 5 min');
  assert.equal(duration(2 * 86400 + 4 * 3600), '2 d 4 h');
  assert.equal(bytes(512), '512 B');
  assert.equal(bytes(20480), '20.0 KiB');
  assert.equal(bytes(5 * 1048576), '5.0 MiB');
  assert.equal(spanLabel(POINTS), '3 min ago');
  assert.equal(spanLabel(31), '1 min ago');
  assert.equal(duration(61), '1 min 1 s');
});

test('verdicts say whether the numbers are fine', () => {
  assert.deepEqual(memoryVerdict(6 * 1048576, 60 * 1048576), ['ok', '10 % of the most it can ever need (60.0 MiB). This is fine.']);
  assert.equal(memoryVerdict(50, 60)[0], 'warn');
  assert.equal(memoryVerdict(59, 60)[0], 'bad');
  assert.equal(queueVerdict(0)[0], 'ok');
  assert.equal(queueVerdict(1 << 20)[0], 'warn');
});
