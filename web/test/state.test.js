// The room's state without a DOM (state.js): requests and their answers,
// the outbox, reactions that toggle, and the bounds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RoomState, KEPT_MESSAGES, MAX_OUTBOX, newUserId } from '../src/state.js';
import { isId } from '../src/frames.js';

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

test('a reaction toggles per user; counts agree whatever the order of users', () => {
  const r = make();
  r.remember('m1', {});
  assert.equal(r.toggleReaction('unknown', '👍', 'u1'), null);
  r.toggleReaction('m1', '👍', 'u1');
  r.toggleReaction('m1', '👍', 'u2');
  r.toggleReaction('m1', '🎉', 'u1');
  const all = r.toggleReaction('m1', '👍', 'u1');
  assert.deepEqual([...all.get('👍')], ['u2']);
  assert.deepEqual([...all.get('🎉')], ['u1']);
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
  // A reaction from two tabs of one person counts once.
  r.remember('m', {});
  r.toggleReaction('m', '👍', 'b1');
  r.toggleReaction('m', '👍', 'b2');
  r.toggleReaction('m', '🎉', 'other-tab');
  assert.deepEqual(r.reactionSummary('m'), [
    { emoji: '👍', count: 1, mine: false, thisTab: false },
    { emoji: '🎉', count: 1, mine: true, thisTab: false },
  ]);
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

test('a wrong key: other members whose profiles do not open, and none that does', () => {
  const r = make({ roomName: 'club' });
  r.addMember(r.myId, 'Ada', r.myTag);
  r.addMember('x', null);
  assert.ok(r.othersUnreadable() && !r.othersReadable());
  r.addMember('y', 'Yan', 'ty');
  assert.ok(r.othersReadable());
});
