// The state of the room this page is in, without any DOM: who is here, which
// requests wait for the relay's answer, what waits for a connection, the
// reactions, the message ids already shown (a catch-up shows nothing twice)
// and the last of them (where a catch-up resumes, PROTOCOL.md section 7).
// room.js drives it from frames and keystrokes; view.js shows it.
import { toB64u } from './codec.js';

/** Messages (and their reactions) remembered for reacting, oldest dropped first. */
export const KEPT_MESSAGES = 500;
/** Requests awaiting an answer; the relay's budget keeps this far lower. */
export const MAX_IN_FLIGHT = 256;
/** Messages typed while disconnected. */
export const MAX_OUTBOX = 100;
/** Message ids remembered so that none is shown twice: more than a room's retained frames (256 by default). */
export const SEEN_IDS = 2048;

/**
 * A reaction frame's emoji as an operation: `{emoji, on}`. "-👍" takes a 👍
 * back. Reactions are set and unset rather than toggled, so applying again a
 * stretch of frames already applied (a catch-up overlapping what was seen)
 * changes nothing.
 */
export function reactionOp(emoji) {
  const off = typeof emoji === 'string' && emoji.length > 1 && emoji[0] === '-';
  return { emoji: off ? emoji.slice(1) : emoji, on: !off };
}

/** The emoji sent to give (`on`) or take back reaction `emoji`. */
export const reactionEmoji = (emoji, on) => (on ? emoji : `-${emoji}`);

/** Display names and room names are cut to this many characters. */
export const MAX_NAME = 40;

/** `text` cut to `max` characters (whole code points). */
export const cut = (text, max = MAX_NAME) => Array.from(text).slice(0, max).join('');

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
    this.reactions = new Map(); // message id -> Map(emoji -> Set(person))
    this.inFlight = []; // budgeted requests awaiting their echo or error, in order
    this.outbox = []; // messages typed while disconnected, in order
    this.unconfirmed = []; // messages sent on a connection that dropped before their echo
    this.seenIds = new Set(); // message ids shown (or dropped), oldest first
    this.joined = false;
    this.everJoined = false;
    this.replaying = false; // between a join with `since` and its `history` frame
    this.quietReplay = false; // the catch-up fills an empty screen: no unread cues
    this.replayFirst = null; // the first entry the current catch-up showed
    this.historyWait = 0; // timer that ends a catch-up the relay never closes
    this.announce = ''; // the line shown once the first catch-up is over
    this.earlier = null; // the "Earlier messages" divider of a newcomer's first entry
    this.created = false; // this page made the room just now
    this.newcomer = false; // first entry into this room from this browser
    this.readUpTo = ''; // the last message id read here before this page started; null once passed
    this.door = { same: 0, other: 0 }; // people at a passphrase room's door with this check and another (door.js)
    this.newMarked = false; // the catch-up of an empty screen marked where the new part begins
    this.lastShownId = null; // newest message id received (catch-up resumes after it)
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

  /** Who user `id` is, for reactions: its person tag (all tabs of a browser), else the id. */
  personOf(id, tag = '') {
    const m = this.members.get(id);
    const t = tag || (id === this.myId ? this.myTag : m ? m.tag : '');
    return t ? `t:${t}` : `i:${id}`;
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

  /** The own message whose echo carries `content` (sent now, or before a drop), taken off its list; or null. */
  takeEcho(content) {
    for (const list of [this.inFlight, this.unconfirmed]) {
      const i = list.findIndex((r) => r.kind === 'msg' && r.content === content);
      if (i >= 0) return list.splice(i, 1)[0];
    }
    return null;
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

  /**
   * The connection dropped: the messages sent on it without an echo may or
   * may not have reached the room. A catch-up tells (their echo is replayed);
   * until then they wait here, at most MAX_OUTBOX of them.
   */
  holdUnconfirmed() {
    const msgs = this.takeAllOpen().filter((r) => r.kind === 'msg');
    this.unconfirmed.push(...msgs);
    return this.unconfirmed.splice(0, Math.max(0, this.unconfirmed.length - MAX_OUTBOX));
  }

  /** The messages whose echo the catch-up did not carry: they never reached the room. */
  takeUnconfirmed() {
    return this.unconfirmed.splice(0);
  }

  /** Whether message `id` was seen already; records it (and moves the catch-up point) if not. */
  seen(id) {
    if (this.seenIds.has(id)) return true;
    this.seenIds.add(id);
    this.lastShownId = id;
    if (this.seenIds.size > SEEN_IDS) this.seenIds.delete(this.seenIds.values().next().value);
    return false;
  }

  /** `since` for the next join: '' on an empty screen (everything retained), else the last id seen. */
  get since() {
    return this.lastShownId || '';
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
    this.seen(id);
    while (this.messages.size > KEPT_MESSAGES) {
      const oldest = this.messages.keys().next().value;
      this.messages.delete(oldest);
      this.reactions.delete(oldest);
    }
  }

  /**
   * Applies one reaction frame: `person` (personOf) gives (`on`) or takes back
   * `emoji` on message `messageId`. Setting what is set changes nothing, so a
   * frame applied twice is harmless. Returns the message's reactions
   * (emoji -> Set of persons), or null for a message not kept.
   */
  setReaction(messageId, emoji, person, on) {
    if (!this.messages.has(messageId)) return null;
    let all = this.reactions.get(messageId);
    if (!all) this.reactions.set(messageId, (all = new Map()));
    const who = all.get(emoji) || new Set();
    if (on) who.add(person);
    else who.delete(person);
    all.set(emoji, who); // an emptied emoji keeps its place should it come back
    return all;
  }

  /** The reactions of message `messageId`: `[{emoji, count, mine}]`, in the order they first came. */
  reactionSummary(messageId) {
    const me = this.personOf(this.myId);
    const out = [];
    for (const [emoji, who] of this.reactions.get(messageId) || []) {
      if (who.size) out.push({ emoji, count: who.size, mine: who.has(me) });
    }
    return out;
  }
}
