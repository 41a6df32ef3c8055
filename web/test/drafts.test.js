// Drafts kept per room in this browser (drafts.js): per room, bounded, blank removes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseDrafts, withDraft, draftIn, MAX_DRAFTS, MAX_DRAFT_CHARS } from '../src/drafts.js';

test('a draft per room, the newest first; blank removes it', () => {
  let list = withDraft([], 'roomA', 'half a tho');
  list = withDraft(list, 'roomB', 'hello');
  assert.equal(draftIn(list, 'roomA'), 'half a tho');
  assert.equal(draftIn(list, 'roomB'), 'hello');
  assert.equal(draftIn(list, 'roomC'), '');
  list = withDraft(list, 'roomA', 'half a thought');
  assert.deepEqual(list.map((d) => d.r), ['roomA', 'roomB']);
  assert.equal(draftIn(list, 'roomA'), 'half a thought');
  list = withDraft(list, 'roomA', '   ');
  assert.deepEqual(list.map((d) => d.r), ['roomB']);
});

test('bounded: rooms and characters', () => {
  let list = [];
  for (let i = 0; i < MAX_DRAFTS + 5; i++) list = withDraft(list, `r${i}`, `text ${i}`);
  assert.equal(list.length, MAX_DRAFTS);
  assert.equal(draftIn(list, 'r0'), '', 'the least recent went first');
  assert.equal(draftIn(list, `r${MAX_DRAFTS + 4}`), `text ${MAX_DRAFTS + 4}`);
  assert.equal(draftIn(withDraft([], 'r', 'x'.repeat(MAX_DRAFT_CHARS * 2)), 'r').length, MAX_DRAFT_CHARS);
});

test('what storage holds is read defensively', () => {
  for (const bad of [null, '', 'not json', '{}', '[1, null, {"r": 3, "t": "x"}]']) assert.deepEqual(parseDrafts(bad), []);
  const list = parseDrafts(JSON.stringify(withDraft([], 'room', 'kept\nover lines')));
  assert.equal(draftIn(list, 'room'), 'kept\nover lines');
});

test('the last message read, per room, in the same bounded form', async () => {
  const kept = new Map();
  globalThis.localStorage = { getItem: (k) => kept.get(k) ?? null, setItem: (k, v) => kept.set(k, v), removeItem: (k) => kept.delete(k) };
  const { loadReadUpTo, saveReadUpTo, saveDraft, loadDraft } = await import('../src/drafts.js');
  assert.equal(loadReadUpTo('room'), '');
  saveReadUpTo('room', 'abc-1');
  saveReadUpTo('other', 'abc-2');
  saveReadUpTo('room', 'abc-3');
  assert.equal(loadReadUpTo('room'), 'abc-3');
  assert.equal(loadReadUpTo('other'), 'abc-2');
  saveDraft('room', 'typed');
  assert.equal(loadDraft('room'), 'typed', 'drafts and reads are kept apart');
  assert.equal(loadReadUpTo('room'), 'abc-3');
  saveDraft('room', '');
  assert.equal(loadDraft('room'), '');
  delete globalThis.localStorage;
});
