// The state of the room this page is in, without any DOM: who is here, which
// requests wait for the relay's answer, what waits for a connection, the
// reactions, and the last message shown (where a catch-up would resume).
// room.js drives it from frames and keystrokes; view.js shows it.
import { toB64u } from './codec.js';

/** Messages (and their reactions) remembered for reacting, oldest dropped first. */
export const KEPT_MESSAGES = 500;
/** Requests awaiting an answer; the relay's budget keeps this far lower. */
export const MAX_IN_FLIGHT = 256;
/** Messages typed while disconnected. */
export const MAX_OUTBOX = 100;

/** A fresh random user id (12 bytes, 16 characters): the relay's only idea of who this is. */
export const newUserId = () => toB64u(crypto.getRandomValues(new Uint8Array(12)));

/** One room as this page knows it. */
export class RoomState {
  /**
   * `key` room key, `roomId` relay id, `messageKey`, display `name`, passphrase
   * `roomName` or '', `myTag` this browser's tag in the room (envelope.js
   * personTag), `title` the room's name given by its creator ('' if unknown).
   */
  constructor({ key, roomId, messageKey, name, roomName = '', myTag = '', title = '' }) {
    Object.assign(this, { key, roomId, messageKey, name, roomName, myTag, title });
    this.myId = newUserId();
    this.members = new Map(); // id -> { id, name | null, tag, title }, in join order
    this.messages = new Map(); // message id -> what the view keeps for it
    this.reactions = new Map(); // message id -> Map(emoji -> Set(user id))
    this.inFlight = []; // budgeted requests awaiting their echo or error, in order
    this.outbox = []; // messages typed while disconnected, in order
    this.joined = false;
    this.everJoined = false;
    this.lastShownId = null; // newest message id on screen (catch-up resumes after it)
    this.dropped = 0;
    this.unread = 0; // messages that came while the tab was away (the title count)
    this.unseen = 0; // messages below the unread divider not yet looked at
    this.blockedUntil = 0;
    this.typingSent = 0; // when this page last said it is typing (0: it said it stopped)
    this.typingIdle = 0; // timer that says so after a pause
    this.typers = new Map(); // user id -> timer that ends their typing line
  }

  /** What the room is called on this page: its creator's name for it, the passphrase room's name, or its id. */
  get label() {
    return this.title || this.roomName || `Room ${this.roomId.slice(0, 6)}`;
  }

  /** A new identity after USER_ID_TAKEN. */
  renewId() {
    this.myId = newUserId();
  }

  /** Replaces the member list (`userList`). */
  setMembers(members) {
    this.members.clear();
    for (const m of members) this.members.set(m.id, m);
  }

  /** Adds or updates one member: `name` null when its profile did not open. */
  addMember(id, name, tag = '', title = '') {
    this.members.set(id, { id, name, tag, title });
  }

  /** Whether user `id` is this person: this tab, or another tab of this browser. */
  isMe(id) {
    if (id === this.myId) return true;
    const m = this.members.get(id);
    return !!(m && m.tag && m.tag === this.myTag);
  }

  /**
   * The people in the room, in order of arrival: the tabs of one browser are
   * one person. `[{name, ids, me}]`; `name` null for someone with another key.
   */
  people() {
    const byKey = new Map();
    for (const m of this.members.values()) {
      const k = m.tag ? `t:${m.tag}` : `i:${m.id}`;
      const p = byKey.get(k);
      if (p) p.ids.push(m.id);
      else byKey.set(k, { name: m.name, ids: [m.id], me: this.isMe(m.id) });
    }
    return [...byKey.values()];
  }

  /** Takes the room's name from the earliest member who knows it; true when it changed. */
  adoptTitle() {
    if (this.title) return false;
    for (const m of this.members.values()) {
      if (m.title) {
        this.title = m.title;
        return true;
      }
    }
    return false;
  }

  /** Whether any other member's profile opened: someone here holds the same key. */
  othersReadable() {
    return [...this.members.values()].some((m) => m.name && !this.isMe(m.id));
  }

  /** Whether other members are here whose profiles did not open. */
  othersUnreadable() {
    return [...this.members.values()].some((m) => !m.name && m.id !== this.myId);
  }

  /** Removes a member; returns its name or null. */
  removeMember(id) {
    const name = this.memberName(id);
    this.members.delete(id);
    return name;
  }

  /** The display name of member `id`, or null when unknown or unreadable. */
  memberName(id) {
    const m = this.members.get(id);
    return m && m.name ? m.name : null;
  }

  /** Records a request sent to the relay: `{kind: 'msg', content, entry}` or `{kind: 'react'}`. */
  expect(req) {
    this.inFlight.push(req);
    if (this.inFlight.length > MAX_IN_FLIGHT) this.inFlight.shift();
  }

  /** The own message whose echo carries `content`, taken off the list; or null. */
  takeEcho(content) {
    const i = this.inFlight.findIndex((r) => r.kind === 'msg' && r.content === content);
    return i >= 0 ? this.inFlight.splice(i, 1)[0] : null;
  }

  /** The oldest open reaction, answered by its echo. */
  takeReactionEcho() {
    const i = this.inFlight.findIndex((r) => r.kind === 'react');
    if (i >= 0) this.inFlight.splice(i, 1);
  }

  /** The oldest open request, which an error reply answers; or null. */
  takeFailed() {
    return this.inFlight.shift() || null;
  }

  /** Every open request (the connection closed: none will be answered). */
  takeAllOpen() {
    return this.inFlight.splice(0);
  }

  /** Keeps `item` until the connection is back; false when the outbox is full. */
  queue(item) {
    if (this.outbox.length >= MAX_OUTBOX) return false;
    this.outbox.push(item);
    return true;
  }

  /** What waited for the connection, in order. */
  takeOutbox() {
    return this.outbox.splice(0);
  }

  /** Remembers the view of message `id` for reactions; the oldest go first. */
  remember(id, item) {
    this.messages.set(id, item);
    this.lastShownId = id;
    while (this.messages.size > KEPT_MESSAGES) {
      const oldest = this.messages.keys().next().value;
      this.messages.delete(oldest);
      this.reactions.delete(oldest);
    }
  }

  /**
   * Applies one reaction frame: a reaction toggles, so every member applying
   * the same sequence agrees on the counts. Returns the message's reactions
   * (emoji -> Set of user ids), or null for a message not kept.
   */
  toggleReaction(messageId, emoji, userId) {
    if (!this.messages.has(messageId)) return null;
    let all = this.reactions.get(messageId);
    if (!all) this.reactions.set(messageId, (all = new Map()));
    const who = all.get(emoji) || new Set();
    if (who.has(userId)) who.delete(userId);
    else who.add(userId);
    all.set(emoji, who); // an emptied emoji keeps its place should it come back
    return all;
  }

  /**
   * The reactions of message `messageId` by person (tabs of one browser count
   * once): `[{emoji, count, mine, thisTab}]`, in the order they first came.
   */
  reactionSummary(messageId) {
    const out = [];
    for (const [emoji, who] of this.reactions.get(messageId) || []) {
      if (!who.size) continue;
      const people = new Set();
      for (const id of who) {
        const m = this.members.get(id);
        people.add(m && m.tag ? `t:${m.tag}` : id === this.myId ? `t:${this.myTag}` : `i:${id}`);
      }
      const mine = [...who].some((id) => this.isMe(id));
      out.push({ emoji, count: people.size, mine, thisTab: who.has(this.myId) });
    }
    return out;
  }
}
