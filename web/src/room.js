// Being in a room: entering and leaving, the connection, joining with a
// catch-up (`since`, PROTOCOL.md section 7) and the frames about the room
// itself; messages, reactions and typing go to incoming.js. State lives in a
// RoomState (state.js), the look in view.js, what this page says in compose.js.
import { $, el, store, tabStore } from './dom.js';
import { encodeKey, deriveRoom, doorOf, seal, personTag } from './envelope.js';
import { checkKey, openDoor } from './door.js';
import { toB64u, fromB64u } from './codec.js';
import { Connection } from './connection.js';
import { errorSentence, retrySeconds, closeSentence } from './errors.js';
import { joinFrame, leaveFrame, REQUEST_ERRORS } from './frames.js';
import { TITLE, clearCues } from './cues.js';
import { MAX_NAME, RoomState, cut } from './state.js';
import { rememberRoom, relabelRoom, savedRooms } from './saved.js';
import { loadDraft, loadReadUpTo } from './drafts.js';
import { hub, loadHubInfo } from './hub.js';
import {
  block, flushOutbox, queueSend, resendUnconfirmed, stopBlock, updateLeft,
} from './compose.js';
import { appendToLog, markFailed, quietLine, setPending, system } from './log.js';
import { onMessage, onReaction, readProfile, setTyping } from './incoming.js';
import {
  autosize, chatError, renderMembers, showConnState, showDropped, showWrongKey, stopConnTicker, togglePanel,
} from './view.js';

export { TITLE, MAX_NAME, cut };
/** A catch-up the relay has not ended by then is taken as over (a safety net: it always ends one). */
const HISTORY_WAIT_MS = 30000;

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
 * `title` is the room's name if this page knows it (its creator typed it);
 * `created` when this page has just made the room.
 */
export function enterRoom(key, name, roomName = '', title = '', created = false) {
  const { roomId, messageKey } = deriveRoom(key);
  const k = encodeKey(key);
  const known = savedRooms().find((e) => e.k === k && e.r === roomName);
  const r = new RoomState({
    key, roomId, messageKey, name, roomName, title: cut((title || known?.n || '').trim()), myTag: personTag(browserSecret(), roomId),
  });
  r.profile = profile(r);
  r.created = created;
  // Someone entering a room for the first time from this browser sees what came before as earlier messages.
  r.newcomer = !created && !known;
  r.readUpTo = loadReadUpTo(roomId);
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
  $('text').value = loadDraft(roomId);
  autosize();
  updateLeft(r);
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  r.conn = new Connection(url, {
    onOpen: () => sendJoin(r),
    onFrame: (f) => room === r && onFrame(r, f),
    onState: (s) => showState(r, s),
    onClose: (code) => onClosed(r, code),
  });
  r.conn.start();
  if (roomName) {
    const { doorId, check } = doorOf(roomName, key);
    r.closeDoor = openDoor(url, doorId, check, r.myTag, (seen) => {
      r.door = seen;
      if (room === r) checkKey(r);
    });
  }
  $('text').focus();
}

function saveRoom(r) {
  rememberRoom(savedForm(r));
  tabStore.set('whisper.room', JSON.stringify({ k: encodeKey(r.key), r: r.roomName, t: r.title }));
}

/**
 * Joins with `since`: '' on an empty screen (everything the room retained is
 * shown), else the last message id seen (what was said meanwhile follows).
 */
function sendJoin(r) {
  r.replaying = true;
  r.replayFirst = null;
  r.quietReplay = !r.everJoined;
  r.conn.send(joinFrame({ room: r.roomId, userId: r.myId, avatar: r.profile, since: r.since }));
}

/** Waits for the catch-up's end: the `history` frame, unless the hub predates catch-up (hub.js). */
function awaitHistory(r) {
  clearTimeout(r.historyWait);
  r.historyWait = setTimeout(() => endReplay(r, null), HISTORY_WAIT_MS);
  loadHubInfo().then(() => hub.history || endReplay(r, null));
}

/**
 * The catch-up is over (`f`: the `history` frame; null when the relay sent
 * none). What was sent before a drop and is still unconfirmed never reached
 * the room: it goes again. Without a history frame nobody can tell, so it
 * waits for a tap on Send again, as before catch-up existed.
 */
function endReplay(r, f) {
  clearTimeout(r.historyWait);
  if (!r.replaying) return;
  r.replaying = false;
  if (r.earlier && !r.replayFirst) r.earlier.remove();
  r.earlier = null;
  const first = r.announce;
  if (f && f.complete === false && !(first && r.created)) {
    quietLine('Some earlier messages may be missing', 'gap', r.replayFirst);
  }
  if (first) system(first);
  r.announce = '';
  if (f) resendUnconfirmed(r);
  else for (const req of r.takeUnconfirmed()) failed(r, req.entry, 'connection lost');
  // Then what was typed offline, in the order it was typed. The join carried
  // `since`, so the room keeps history from then on: these reach every
  // member, whoever comes back first.
  flushOutbox(r);
}

/** `userList`: the join succeeded. */
function joined(r, users) {
  r.members.clear();
  for (const u of users) addMember(r, u);
  membersChanged(r);
  const first = !r.everJoined;
  r.joined = r.everJoined = true;
  r.conn.healthy();
  showState(r, { state: 'connected' });
  chatError('');
  if (first) {
    r.announce = r.newcomer || r.created ? 'You joined the room.' : 'You are back in the room.';
    if (r.newcomer) {
      r.earlier = el('p', 'divider earlier');
      r.earlier.setAttribute('role', 'separator');
      r.earlier.append(el('span', '', 'Earlier messages'));
      appendToLog(r.earlier);
    }
  } else system('Reconnected.');
  awaitHistory(r);
}

/** Leaves the room for the lobby; returns what it takes to rejoin: `{k, r, l, n}` (saved.js). */
export function leaveRoom() {
  if (!room) return null;
  const r = room;
  r.conn.send(leaveFrame());
  r.conn.stop();
  r.closeDoor?.();
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
  // A catch-up cut short resumes after the last id seen, at the next join.
  clearTimeout(r.historyWait);
  r.replaying = false;
  // What was sent but not echoed may or may not have reached the room: the next catch-up tells.
  for (const req of r.holdUnconfirmed()) failed(r, req.entry, 'too many waiting');
  for (const req of r.unconfirmed) setPending(req.entry, 'waiting for the connection…');
  const why = closeSentence(code);
  chatError(why ? `${why} Reconnecting…` : '');
}

function failed(r, entry, reason) {
  markFailed(entry, reason, () => queueSend(r, entry, entry.text));
}

function addMember(r, user) {
  const p = readProfile(r, user.avatar);
  r.addMember(user.id, p.name, p.tag, p.title);
  return p.name;
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

function onFrame(r, f) {
  switch (f.type) {
    case 'userList':
      joined(r, f.users || []);
      break;
    case 'history':
      hub.history = true; // whatever /health said
      endReplay(r, f);
      break;
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
