// Being in a room: entering and leaving, the connection, and what to do with
// each frame the relay sends. State lives in a RoomState (state.js), the
// look in view.js, what this page says in compose.js.
import { $, tabStore } from './dom.js';
import { encodeKey, deriveRoom, seal, open } from './envelope.js';
import { Connection } from './connection.js';
import { errorSentence, retrySeconds, closeSentence } from './errors.js';
import { joinFrame, leaveFrame, REQUEST_ERRORS } from './frames.js';
import { showUnread, chime, buzz } from './notify.js';
import { RoomState } from './state.js';
import { flushOutbox, queueSend, sendReaction, updateLeft } from './compose.js';
import {
  QUICK, addReactionBar, appendToLog, chatError, markDelivered, markFailed, messageEntry, renderMembers,
  renderReactions, renderTyping, setTime, showConnState, showDropped, system, togglePanel, undecryptableEntry,
} from './view.js';

/** The page's title without an unread count. */
export const TITLE = 'Whisper';
/** Display names are cut to this many characters. */
export const MAX_NAME = 40;
const TYPING_SHOWN_MS = 6000;

let room = null;

/** The room this page is in, or null in the lobby. */
export const current = () => room;

/** Enters a room: an invite-link room, or with `roomName` a passphrase room. */
export function enterRoom(key, name, roomName = '') {
  const { roomId, messageKey } = deriveRoom(key, roomName || null);
  const r = new RoomState({ key, roomId, messageKey, name, roomName });
  r.profile = seal(messageKey, 'profile', { n: name });
  room = r;
  tabStore.set('whisper.room', JSON.stringify({ k: encodeKey(key), r: roomName }));
  $('lobby').hidden = true;
  $('chat').hidden = false;
  $('room-title').textContent = r.label;
  $('log').replaceChildren();
  chatError('');
  showDropped(0);
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

function sendJoin(r) {
  r.conn.send(joinFrame({ room: r.roomId, userId: r.myId, avatar: r.profile }));
}

/** Leaves the room for the lobby. */
export function leaveRoom() {
  if (!room) return;
  room.conn.send(leaveFrame());
  room.conn.stop();
  room = null;
  tabStore.remove('whisper.room');
  showUnread(0, TITLE);
  $('chat').hidden = true;
  $('lobby').hidden = false;
}

function showState(r, s) {
  if (s.state !== 'connected') r.joined = false;
  showConnState(s, () => r.joined);
}

function onClosed(r, code) {
  if (room !== r) return;
  r.joined = false;
  // What was sent but not confirmed may or may not have reached the room.
  for (const req of r.takeAllOpen()) if (req.kind === 'msg') failed(r, req.entry);
  const why = closeSentence(code);
  chatError(why ? `${why} Reconnecting…` : '');
}

function failed(r, entry) {
  markFailed(entry, () => queueSend(r, entry, entry.text));
}

function addMember(r, user) {
  const opened = open(r.messageKey, 'profile', user.avatar);
  const name = opened.ok && typeof opened.value.n === 'string' ? opened.value.n.slice(0, MAX_NAME) : null;
  r.addMember(user.id, name);
  return name;
}

const showMembers = (r) => renderMembers(r.members.values(), r.myId, r.name);

function onFrame(r, f) {
  switch (f.type) {
    case 'userList': {
      r.members.clear();
      for (const u of f.users || []) addMember(r, u);
      showMembers(r);
      const first = !r.everJoined;
      r.joined = r.everJoined = true;
      r.conn.healthy();
      showState(r, { state: 'connected' });
      chatError('');
      system(first ? 'You joined the room.' : 'Reconnected.');
      flushOutbox(r);
      break;
    }
    case 'userJoined':
      system(`${addMember(r, f.user) || 'Someone with another key'} joined.`);
      showMembers(r);
      break;
    case 'userLeft': {
      const name = r.removeMember(f.userId);
      setTyping(r, f.userId, false);
      showMembers(r);
      system(`${name || 'Someone with another key'} left.`);
      break;
    }
    case 'message':
      onMessage(r, f);
      break;
    case 'userTyping':
      if (f.user && f.user.id !== r.myId) setTyping(r, f.user.id, !!f.isTyping);
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
    appendToLog(undecryptableEntry(f.timestamp).li);
    notifyNew(r);
    return;
  }
  const who = typeof opened.value.n === 'string' ? opened.value.n.slice(0, MAX_NAME) : 'someone';
  const entry = messageEntry(who, opened.value.t, false);
  setTime(entry, f.timestamp);
  attachReactions(r, entry, f.id);
  appendToLog(entry.li);
  setTyping(r, f.user.id, false);
  notifyNew(r);
}

function attachReactions(r, entry, id) {
  if (!id || entry.id) return;
  entry.id = id;
  r.remember(id, entry);
  addReactionBar(entry, (emoji) => sendReaction(r, id, emoji));
}

function onReaction(r, f) {
  if (f.user && f.user.id === r.myId) r.takeReactionEcho();
  const entry = r.messages.get(f.messageId);
  if (!entry || !f.user || !QUICK.includes(f.emoji)) return;
  const reactions = r.toggleReaction(f.messageId, f.emoji, f.user.id);
  renderReactions(entry, reactions, r.myId, (emoji) => sendReaction(r, entry.id, emoji));
}

function onError(r, f) {
  const sentence = errorSentence(f);
  chatError(sentence);
  if (REQUEST_ERRORS.has(f.code)) {
    // Replies keep the order of requests: the oldest open request failed.
    const req = r.takeFailed();
    if (req && req.kind === 'msg') failed(r, req.entry);
  }
  if (f.code === 'RATE_LIMITED') {
    const ms = retrySeconds(f.message) * 1000;
    r.blockedUntil = Date.now() + ms;
    updateLeft(r);
    setTimeout(() => {
      updateLeft(room);
      if ($('chat-error').textContent === sentence) chatError('');
    }, ms + 50);
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

function notifyNew(r) {
  if (document.visibilityState === 'visible' && document.hasFocus()) return;
  r.unread++;
  showUnread(r.unread, TITLE);
  if ($('opt-sound').checked) chime();
  if ($('opt-vibrate').checked) buzz();
}

/** The tab is back in view: the unread count goes. */
export function clearUnread() {
  if (room && room.unread && document.visibilityState === 'visible') {
    room.unread = 0;
    showUnread(0, TITLE);
  }
}
