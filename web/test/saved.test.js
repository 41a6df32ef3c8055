// Rooms remembered in this browser (saved.js): the list's rules without storage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_SAVED, parseSaved, withRoom, withoutRoom } from '../src/saved.js';

test('unreadable storage gives an empty list', () => {
  for (const json of [null, '', 'x', '{}', '[1,2]', '[{"k":1}]']) assert.deepEqual(parseSaved(json), []);
  assert.equal(parseSaved('[{"k":"a","r":"","l":"A"},{"k":2}]').length, 1);
});

test('a room used again moves to the front, once; the list is bounded', () => {
  let list = [];
  for (let i = 0; i < MAX_SAVED + 5; i++) list = withRoom(list, { k: `k${i}`, r: '', l: `Room ${i}` }, i);
  assert.equal(list.length, MAX_SAVED);
  assert.equal(list[0].k, `k${MAX_SAVED + 4}`);
  list = withRoom(list, { k: 'k10', r: '', l: 'Renamed', n: 'Renamed' }, 99);
  assert.equal(list.length, MAX_SAVED);
  assert.deepEqual(list[0], { k: 'k10', r: '', l: 'Renamed', n: 'Renamed', t: 99 });
  assert.equal(list.filter((e) => e.k === 'k10').length, 1);
  assert.deepEqual(parseSaved(JSON.stringify(list)), list);
});

test('a passphrase room is told apart by its name; forgetting removes only it', () => {
  let list = withRoom([], { k: 'same', r: 'club', l: 'club' });
  list = withRoom(list, { k: 'same', r: '', l: 'Room x' });
  assert.equal(list.length, 2);
  list = withoutRoom(list, { k: 'same', r: 'club' });
  assert.deepEqual(list.map((e) => e.r), ['']);
});
