// The room's state without a DOM (state.js): requests and their answers,
// the outbox, reactions that toggle, and the bounds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  RoomState, KEPT_MESSAGES, MAX_OUTBOX, SEEN_IDS, newUserId, reactionOp, reactionEmoji,
} from '../src/state.js';
import { isId, reactionFrame } from '../src/frames.js';

const make = (over = {}) => new RoomState({ key: new Uint8Array(32), roomId: 'ABCDEFGHabcdefgh', messageKey: new Uint8Array(32), name: 'Ada', ...over });

test('a room is labelled by its passphrase name, else by its id', () => {
  assert.equal(make().label, 'Room ABCDEF');
  assert.equal(make({ roomName: 'Book Club' }).label, 'Book Club');
});

test('user ids are random and follow the id rule', () => {
  const a = newUserId();
  assert.ok(isId(a) && a.length === 16);
  assert.notEqual(a, newUserId());
  const r = make();
  const before = r.myId;
  r.renewId();
  assert.notEqual(r.myId, before);
});

test('an echo answers the request with the same content; an error answers the oldest', () => {
  const r = make();
  r.expect({ kind: 'msg', content: 'c1', entry: 1 });
  r.expect({ kind: 'react' });
  r.expect({ kind: 'msg', content: 'c2', entry: 2 });
  assert.equal(r.takeEcho('c2').entry, 2);
  assert.equal(r.takeEcho('c2'), null);
  assert.equal(r.takeFailed().entry, 1);
  r.takeReactionEcho();
  assert.equal(r.takeFailed(), null);
  r.expect({ kind: 'msg', content: 'c3' });
  assert.equal(r.takeAllOpen().length, 1);
  assert.equal(r.inFlight.length, 0);
});

test('the outbox keeps order and is bounded', () => {
  const r = make();
  for (let i = 0; i < MAX_OUTBOX; i++) assert.ok(r.queue(i));
  assert.equal(r.queue('one too many'), false);
  const out = r.takeOutbox();
  assert.equal(out.length, MAX_OUTBOX);
  assert.deepEqual(out.slice(0, 3), [0, 1, 2]);
  assert.equal(r.takeOutbox().length, 0);
});

test('a reaction is set or taken back per person; counts agree whatever the order of people', () => {
  const r = make();
  r.remember('m1', {});
  assert.equal(r.setReaction('unknown', '👍', 'i:u1', true), null);
  r.setReaction('m1', '👍', 'i:u1', true);
  r.setReaction('m1', '👍', 'i:u2', true);
  r.setReaction('m1', '🎉', 'i:u1', true);
  const all = r.setReaction('m1', '👍', 'i:u1', false);
  assert.deepEqual([...all.get('👍')], ['i:u2']);
  assert.deepEqual([...all.get('🎉')], ['i:u1']);
});

test('reaction frames as operations: "-👍" takes 👍 back', () => {
  assert.deepEqual(reactionOp('👍'), { emoji: '👍', on: true });
  assert.deepEqual(reactionOp('-❤️'), { emoji: '❤️', on: false });
  assert.deepEqual(reactionOp('-'), { emoji: '-', on: true }, 'a lone dash is an emoji of its own');
  assert.equal(reactionEmoji('🎉', true), '🎉');
  assert.equal(reactionEmoji('🎉', false), '-🎉');
  for (const e of ['👍', '❤️', '🎉']) assert.doesNotThrow(() => reactionFrame('m', reactionEmoji(e, false)), 'the relay accepts it');
});

/** Applies reaction frames [messageId, emoji, person] to `r`, in order. */
const apply = (r, frames) => {
  for (const [m, e, who] of frames) {
    const { emoji, on } = reactionOp(e);
    r.setReaction(m, emoji, who, on);
  }
};

test('a catch-up that replays reactions already applied changes nothing', () => {
  const frames = [
    ['m1', '👍', 't:bob'], ['m1', '🎉', 't:cy'], ['m1', '-👍', 't:bob'], ['m2', '❤️', 't:bob'],
    ['m1', '👍', 't:cy'], ['m2', '-❤️', 't:bob'], ['m2', '❤️', 't:ann'], ['m1', '👍', 't:bob'],
  ];
  const live = make();
  live.remember('m1', {});
  live.remember('m2', {});
  apply(live, frames);
  const want = [live.reactionSummary('m1'), live.reactionSummary('m2')];
  // Every suffix replayed again (what a since-id or a full catch-up overlaps), then more live frames.
  for (let k = 0; k <= frames.length; k++) {
    const r = make();
    r.remember('m1', {});
    r.remember('m2', {});
    apply(r, frames);
    apply(r, frames.slice(k));
    assert.deepEqual([r.reactionSummary('m1'), r.reactionSummary('m2')], want, `replay from ${k}`);
  }
  // An empty screen that gets only the retained suffix agrees on every reaction whose last frame it got.
  const fresh = make();
  fresh.remember('m1', {});
  fresh.remember('m2', {});
  apply(fresh, frames.slice(4));
  assert.deepEqual(fresh.reactionSummary('m2'), want[1]);
});

test('messages: each id once, the catch-up point follows, bounded', () => {
  const r = make();
  assert.equal(r.since, '', 'an empty screen asks for everything retained');
  assert.equal(r.seen('a1'), false);
  assert.equal(r.seen('a2'), false);
  assert.equal(r.seen('a1'), true, 'shown already');
  assert.equal(r.since, 'a2', 'a replayed duplicate does not move the catch-up point back');
  for (let i = 0; i < SEEN_IDS + 10; i++) r.seen(`x${i}`);
  assert.equal(r.seenIds.size, SEEN_IDS);
  assert.equal(r.seen('a1'), false, 'the oldest are forgotten first');
  assert.equal(r.since, 'a1');
});

test('messages sent on a dropped connection wait for the catch-up; their replayed echo confirms them', () => {
  const r = make();
  r.expect({ kind: 'msg', content: 'c1', entry: 1 });
  r.expect({ kind: 'react' });
  r.expect({ kind: 'msg', content: 'c2', entry: 2 });
  assert.deepEqual(r.holdUnconfirmed(), []);
  assert.equal(r.inFlight.length, 0);
  assert.deepEqual(r.unconfirmed.map((q) => q.entry), [1, 2]);
  r.expect({ kind: 'msg', content: 'c3', entry: 3 });
  assert.equal(r.takeEcho('c1').entry, 1, 'the catch-up carried it: it did reach the room');
  assert.equal(r.takeEcho('c3').entry, 3);
  assert.deepEqual(r.takeUnconfirmed().map((q) => q.entry), [2], 'never reached the room: send again');
  for (let i = 0; i < MAX_OUTBOX + 3; i++) r.expect({ kind: 'msg', content: `k${i}`, entry: i });
  assert.equal(r.holdUnconfirmed().length, 3, 'bounded: the oldest beyond the bound are given up');
  assert.equal(r.unconfirmed.length, MAX_OUTBOX);
});

test('members, the last message shown, and the bound on kept messages', () => {
  const r = make();
  r.addMember('a', 'Alan');
  r.addMember('b', null);
  assert.equal(r.memberName('a'), 'Alan');
  assert.equal(r.memberName('b'), null);
  assert.equal(r.removeMember('a'), 'Alan');
  assert.equal(r.members.size, 1);
  assert.equal(r.lastShownId, null);
  for (let i = 0; i < KEPT_MESSAGES + 10; i++) r.remember(`m${i}`, i);
  assert.equal(r.messages.size, KEPT_MESSAGES);
  assert.ok(!r.messages.has('m0') && r.messages.has(`m${KEPT_MESSAGES + 9}`));
  assert.equal(r.lastShownId, `m${KEPT_MESSAGES + 9}`);
});

test('the tabs of one browser are one person, to itself and to the others', () => {
  const r = make({ myTag: 'me-tag' });
  r.addMember(r.myId, 'Ada', 'me-tag');
  r.addMember('other-tab', 'Ada', 'me-tag');
  r.addMember('b1', 'Bob', 'bob-tag');
  r.addMember('b2', 'Bob', 'bob-tag');
  r.addMember('eve', null, '');
  const people = r.people();
  assert.deepEqual(people.map((p) => [p.name, p.ids.length, p.me]), [['Ada', 2, true], ['Bob', 2, false], [null, 1, false]]);
  assert.ok(r.isMe('other-tab') && !r.isMe('b1') && !r.isMe('eve'));
  // A reaction from two tabs of one person counts once, and either tab can take it back.
  r.remember('m', {});
  r.setReaction('m', '👍', r.personOf('b1'), true);
  r.setReaction('m', '👍', r.personOf('b2'), true);
  r.setReaction('m', '🎉', r.personOf('other-tab'), true);
  r.setReaction('m', '😮', r.personOf('eve'), true);
  assert.deepEqual(r.reactionSummary('m'), [
    { emoji: '👍', count: 1, mine: false },
    { emoji: '🎉', count: 1, mine: true },
    { emoji: '😮', count: 1, mine: false },
  ]);
  r.setReaction('m', '🎉', r.personOf(r.myId), false);
  assert.deepEqual(r.reactionSummary('m').map((x) => x.emoji), ['👍', '😮']);
  // Someone who left: the tag from the profile the replayed frame carries.
  assert.equal(r.personOf('gone', 'bob-tag'), r.personOf('b1'));
});

test('the room takes its name from the earliest member who knows it', () => {
  const r = make();
  r.addMember('a', 'Ada', 'ta', '');
  assert.equal(r.adoptTitle(), false);
  r.addMember('b', 'Bob', 'tb', 'Tea Club');
  r.addMember('c', 'Cy', 'tc', 'Other Name');
  assert.equal(r.adoptTitle(), true);
  assert.equal(r.label, 'Tea Club');
  assert.equal(r.adoptTitle(), false);
});

test('someone else here holds the key: another member whose profile opens', () => {
  const r = make({ roomName: 'club', myTag: 'me' });
  r.addMember(r.myId, 'Ada', r.myTag);
  r.addMember('x', null);
  r.addMember('other-tab', 'Ada', r.myTag);
  assert.ok(!r.othersReadable(), 'one\'s own other tab does not count');
  r.addMember('y', 'Yan', 'ty');
  assert.ok(r.othersReadable());
});
