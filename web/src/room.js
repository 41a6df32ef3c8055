// Being in a room: entering and leaving, the connection, and what to do with
// each frame the relay sends. State lives in a RoomState (state.js), the
// look in view.js, what this page says in compose.js.
import { $, store, tabStore } from './dom.js';
import { encodeKey, deriveRoom, seal, open, personTag } from './envelope.js';
import { toB64u, fromB64u } from './codec.js';
import { Connection } from './connection.js';
import { errorSentence, retrySeconds, closeSentence } from './errors.js';
import { joinFrame, leaveFrame, REQUEST_ERRORS } from './frames.js';
import { TITLE, clearCues, showIncoming } from './cues.js';
import { RoomState } from './state.js';
import { rememberRoom, relabelRoom } from './saved.js';
import { block, flushOutbox, queueSend, sendReaction, stopBlock, updateLeft } from './compose.js';
import {
  appendToLog, markDelivered, markFailed, messageEntry, scrollToEnd, setTime, system, undecryptableEntry,
} from './log.js';
import { QUICK, addReactions, renderReactions } from './reactions.js';
import {
  chatError, renderMembers, renderTyping, showConnState, showDropped, showWrongKey, stopConnTicker, togglePanel,
} from './view.js';

export { TITLE };
/** Display names and room names are cut to this many characters. */
export const MAX_NAME = 40;
const TYPING_SHOWN_MS = 6000;

let room = null;

/** The room this page is in, or null in the lobby. */
export const current = () => room;

/** This browser's secret for person tags: random, made once, never sent anywhere. */
function browserSecret() {
  let secret = fromB64u(store.get('whisper.me') || '');
  if (!secret || secret.length !== 16) {
    secret = crypto.getRandomValues(new Uint8Array(16));
    store.set('whisper.me', toB64u(secret));
  }
  return secret;
}

/** `text` cut to `max` characters (whole code points). */
export const cut = (text, max = MAX_NAME) => Array.from(text).slice(0, max).join('');

/** The sealed profile: name, person tag, and the room's name when known (left out if too long). */
function profile(r) {
  const p = { n: r.name, p: r.myTag };
  const withTitle = r.title ? seal(r.messageKey, 'profile', { ...p, r: r.title }) : '';
  return withTitle && withTitle.length <= 512 ? withTitle : seal(r.messageKey, 'profile', p);
}

/** How this room is saved and restored: `{k, r}` identifies it. */
const savedForm = (r) => ({ k: encodeKey(r.key), r: r.roomName, l: r.label, n: r.title });

/**
 * Enters a room: an invite-link room, or with `roomName` a passphrase room.
 * `title` is the room's name if this page knows it (its creator typed it).
 */
export function enterRoom(key, name, roomName = '', title = '') {
  const { roomId, messageKey } = deriveRoom(key, roomName || null);
  const r = new RoomState({
    key, roomId, messageKey, name, roomName, title: cut((title || '').trim()), myTag: personTag(browserSecret(), roomId),
  });
  r.profile = profile(r);
  room = r;
  saveRoom(r);
  $('lobby').hidden = true;
  $('chat').hidden = false;
  $('room-title').textContent = r.label;
  $('log').replaceChildren();
  chatError('');
  showDropped(0);
  showWrongKey('');
  if (matchMedia('(min-width: 720px)').matches) togglePanel('members', true);
  updateLeft(r);
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  r.conn = new Connection(url, {
    onOpen: () => sendJoin(r),
    onFrame: (f) => room === r && onFrame(r, f),
    onState: (s) => showState(r, s),
    onClose: (code) => onClosed(r, code),
  });
  r.conn.start();
  $('text').focus();
}

function saveRoom(r) {
  rememberRoom(savedForm(r));
  tabStore.set('whisper.room', JSON.stringify({ k: encodeKey(r.key), r: r.roomName, t: r.title }));
}

function sendJoin(r) {
  r.conn.send(joinFrame({ room: r.roomId, userId: r.myId, avatar: r.profile }));
}

/** Leaves the room for the lobby; returns what it takes to rejoin: `{k, r, l, n}` (saved.js). */
export function leaveRoom() {
  if (!room) return null;
  const r = room;
  r.conn.send(leaveFrame());
  r.conn.stop();
  room = null;
  stopBlock();
  showConnState({ state: 'connecting' }, () => false);
  stopConnTicker();
  tabStore.remove('whisper.room');
  clearCues();
  $('chat').hidden = true;
  $('lobby').hidden = false;
  return savedForm(r);
}

function showState(r, s) {
  if (s.state !== 'connected') r.joined = false;
  showConnState(s, () => r.joined);
}

function onClosed(r, code) {
  if (room !== r) return;
  r.joined = false;
  // What was sent but not confirmed may or may not have reached the room.
  for (const req of r.takeAllOpen()) if (req.kind === 'msg') failed(r, req.entry, 'connection lost');
  const why = closeSentence(code);
  chatError(why ? `${why} Reconnecting…` : '');
}

function failed(r, entry, reason) {
  markFailed(entry, reason, () => queueSend(r, entry, entry.text));
}

function addMember(r, user) {
  const opened = open(r.messageKey, 'profile', user.avatar);
  const v = opened.ok && opened.value && typeof opened.value === 'object' ? opened.value : {};
  const name = typeof v.n === 'string' ? cut(v.n) : null;
  r.addMember(user.id, name, typeof v.p === 'string' ? v.p : '', typeof v.r === 'string' ? cut(v.r) : '');
  return name;
}

function membersChanged(r) {
  renderMembers(r.people(), r.name);
  if (r.adoptTitle()) {
    $('room-title').textContent = r.label;
    r.profile = profile(r);
    relabelRoom(savedForm(r));
    saveRoom(r);
  }
  checkKey(r);
}

/** In a passphrase room where no one else's profile opens, the passphrase typed here is probably wrong. */
function checkKey(r) {
  if (!r.roomName || r.othersReadable() || !r.othersUnreadable()) {
    showWrongKey('');
    return;
  }
  const others = [...r.members.keys()].filter((id) => id !== r.myId).length;
  showWrongKey(others > 1
    ? 'Nobody here can read your messages, and you cannot read theirs: the passphrase you typed is probably not the one the others use.'
    : 'The other person here uses another passphrase: one of you probably mistyped it. Check yours.');
}

function onFrame(r, f) {
  switch (f.type) {
    case 'userList': {
      r.members.clear();
      for (const u of f.users || []) addMember(r, u);
      membersChanged(r);
      const first = !r.everJoined;
      r.joined = r.everJoined = true;
      r.conn.healthy();
      showState(r, { state: 'connected' });
      chatError('');
      system(first ? 'You joined the room.' : 'Reconnected.');
      flushOutbox(r);
      break;
    }
    case 'userJoined': {
      const name = addMember(r, f.user);
      system(r.isMe(f.user.id) ? 'You opened this room in another tab.' : `${name || 'Someone with another key'} joined.`);
      membersChanged(r);
      break;
    }
    case 'userLeft': {
      const mine = r.isMe(f.userId);
      const name = r.removeMember(f.userId);
      setTyping(r, f.userId, false);
      membersChanged(r);
      system(mine ? 'Your other tab left the room.' : `${name || 'Someone with another key'} left.`);
      break;
    }
    case 'message':
      onMessage(r, f);
      break;
    case 'userTyping':
      if (f.user && !r.isMe(f.user.id)) setTyping(r, f.user.id, !!f.isTyping);
      break;
    case 'reaction':
      onReaction(r, f);
      break;
    case 'error':
      onError(r, f);
      break;
    default:
  }
}

function onMessage(r, f) {
  if (f.user && f.user.id === r.myId) {
    const req = r.takeEcho(f.content);
    if (req) {
      setTime(req.entry, f.timestamp);
      markDelivered(req.entry);
      attachReactions(r, req.entry, f.id);
    }
    return;
  }
  const opened = open(r.messageKey, 'msg', f.content);
  const sender = f.user ? r.members.get(f.user.id) : null;
  if (!opened.ok || typeof opened.value.t !== 'string') {
    if (sender && sender.name) {
      // The sender holds our key (its profile opened), so this was altered on the way.
      showDropped(++r.dropped);
      return;
    }
    showIncoming(r, undecryptableEntry(f.timestamp).li);
    if (f.id) r.lastShownId = f.id;
    return;
  }
  const who = typeof opened.value.n === 'string' ? cut(opened.value.n) : 'someone';
  if (f.user && r.isMe(f.user.id)) {
    // Said in another tab of this browser: one's own message.
    const entry = messageEntry(who, opened.value.t, true, '✓ from your other tab');
    entry.mark.classList.add('delivered');
    setTime(entry, f.timestamp);
    attachReactions(r, entry, f.id);
    if (appendToLog(entry.li)) scrollToEnd();
    return;
  }
  const entry = messageEntry(who, opened.value.t, false);
  setTime(entry, f.timestamp);
  attachReactions(r, entry, f.id);
  showIncoming(r, entry.li);
  if (f.user) setTyping(r, f.user.id, false);
}

function attachReactions(r, entry, id) {
  if (!id || entry.id) return;
  entry.id = id;
  r.remember(id, entry);
  addReactions(entry, (emoji) => sendReaction(r, id, emoji));
}

function onReaction(r, f) {
  if (f.user && f.user.id === r.myId) r.takeReactionEcho();
  const entry = r.messages.get(f.messageId);
  if (!entry || !f.user || !QUICK.includes(f.emoji)) return;
  r.toggleReaction(f.messageId, f.emoji, f.user.id);
  renderReactions(entry, r.reactionSummary(f.messageId), (emoji) => sendReaction(r, entry.id, emoji));
}

const REASONS = { RATE_LIMITED: 'sent too fast', MESSAGE_TOO_LARGE: 'too long', NOT_IN_ROOM: 'not connected yet' };

function onError(r, f) {
  if (f.code === 'RATE_LIMITED') block(r, retrySeconds(f.message) * 1000);
  else chatError(errorSentence(f));
  if (REQUEST_ERRORS.has(f.code)) {
    // Replies keep the order of requests: the oldest open request failed.
    const req = r.takeFailed();
    if (req && req.kind === 'msg') failed(r, req.entry, REASONS[f.code] || 'refused by the hub');
  }
  if (f.code === 'USER_ID_TAKEN') {
    r.renewId();
    sendJoin(r);
  }
}

function setTyping(r, id, on) {
  clearTimeout(r.typers.get(id));
  if (on) r.typers.set(id, setTimeout(() => setTyping(r, id, false), TYPING_SHOWN_MS));
  else r.typers.delete(id);
  renderTyping([...r.typers.keys()].map((i) => r.memberName(i) || 'someone'));
}
