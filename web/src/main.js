// The hub's chat page: lobby, room, invite. Everything a person types is
// sealed by envelope.js before it leaves the page; the relay sees a room id,
// a random user id, the neutral handle below and ciphertext.
import {
  newRoomKey, encodeKey, decodeKey, deriveRoom, seal, open, chatEnvelope, chatFrameLength,
} from './envelope.js';
import { toB64u } from './codec.js';
import { Connection } from './connection.js';
import { errorSentence, retrySeconds, closeSentence } from './errors.js';
import { showUnread, armSound, chime, buzz } from './notify.js';
import { qrSvg } from './qrsvg.js';

/** The name the relay sees for everyone: display names travel sealed. */
const HANDLE = 'member';
const TITLE = 'Whisper';
const QUICK = ['👍', '❤️', '😂', '😮', '🎉'];
const TYPING_EVERY_MS = 3000;
const TYPING_IDLE_MS = 4000;
const TYPING_SHOWN_MS = 6000;
const MAX_NAME = 40;

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};
const store = {
  get: (k) => { try { return localStorage.getItem(k); } catch { return null; } },
  set: (k, v) => { try { localStorage.setItem(k, v); } catch { /* private mode */ } },
};

let hub = { max_message_bytes: 10240, hostname: null, addresses: [] };
let invitedKey = null;
let room = null;

// ---------------------------------------------------------------- lobby

function lobbyError(text) {
  $('lobby-error').textContent = text;
}

function displayName() {
  const name = $('name').value.trim().replace(/\s+/g, ' ').slice(0, MAX_NAME);
  if (!name) {
    lobbyError('Type your name first: it is shown to the others in the room.');
    $('name').focus();
    return null;
  }
  store.set('whisper.name', name);
  return name;
}

function readInviteFragment() {
  const frag = location.hash.slice(1);
  if (!frag) return;
  // The key must not stay in the address bar, the history or a bookmark.
  history.replaceState(null, '', location.pathname + location.search);
  const key = decodeKey(frag);
  if (!key) {
    lobbyError('This invite link is damaged. Ask for it again.');
    return;
  }
  invitedKey = key;
  $('invited').hidden = false;
  $('join-invite').hidden = false;
  $('new-room').classList.remove('primary');
}

function deriveInWorker(roomName, passphrase) {
  return new Promise((resolve, reject) => {
    const w = new Worker('kdf-worker.js');
    w.onmessage = (ev) => {
      w.terminate();
      if (ev.data.key) resolve(new Uint8Array(ev.data.key));
      else reject(new Error(ev.data.error));
    };
    w.onerror = (e) => {
      w.terminate();
      reject(new Error(e.message || 'worker failed'));
    };
    w.postMessage({ room: roomName, passphrase });
  });
}

async function joinByPassphrase(ev) {
  ev.preventDefault();
  lobbyError('');
  const name = displayName();
  if (!name) return;
  const roomName = $('room-name').value.trim();
  const pass = $('passphrase').value;
  if (!roomName || !pass) {
    lobbyError('Type both the room name and the passphrase.');
    (roomName ? $('passphrase') : $('room-name')).focus();
    return;
  }
  const btn = $('pass-join');
  btn.disabled = true;
  btn.textContent = 'Unlocking the room…';
  const t0 = performance.now();
  try {
    const key = await deriveInWorker(roomName, pass);
    document.body.dataset.kdfMs = String(Math.round(performance.now() - t0));
    $('passphrase').value = '';
    enterRoom(key, name, roomName);
  } catch (e) {
    lobbyError(`Could not derive the room key: ${e.message}`);
  } finally {
    btn.disabled = false;
    btn.textContent = 'Enter the room';
  }
}

// ---------------------------------------------------------------- room

/** Enters a room: an invite-link room, or with `roomName` a passphrase room. */
function enterRoom(key, name, roomName = '') {
  const { roomId, messageKey } = deriveRoom(key, roomName || null);
  room = {
    key, roomId, messageKey, name, roomName,
    label: roomName || `Room ${roomId.slice(0, 6)}`,
    myId: toB64u(crypto.getRandomValues(new Uint8Array(12))),
    profile: seal(messageKey, 'profile', { n: name }),
    members: new Map(),
    messages: new Map(),
    inFlight: [], // budgeted requests awaiting their echo or error, in order
    outbox: [], // messages typed while disconnected
    joined: false,
    everJoined: false,
    dropped: 0,
    unread: 0,
    typingSent: 0,
    typingIdle: 0,
    typers: new Map(),
    blockedUntil: 0,
  };
  try { sessionStorage.setItem('whisper.room', JSON.stringify({ k: encodeKey(key), r: roomName })); } catch { /* ignore */ }
  $('lobby').hidden = true;
  $('chat').hidden = false;
  $('room-title').textContent = room.label;
  $('log').replaceChildren();
  $('chat-error').textContent = '';
  $('dropped').hidden = true;
  if (matchMedia('(min-width: 720px)').matches) togglePanel('members', true);
  updateLeft();
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  room.conn = new Connection(url, {
    onOpen: () => sendJoin(),
    onFrame: (f) => onFrame(f),
    onState: (s) => showState(s),
    onClose: (code) => onClosed(code),
  });
  room.conn.start();
  $('text').focus();
}

function sendJoin() {
  room.conn.send({
    type: 'join',
    data: { room: room.roomId, user: { id: room.myId, name: HANDLE, avatar: room.profile } },
  });
}

function leaveRoom() {
  if (!room) return;
  room.conn.send({ type: 'leave' });
  room.conn.stop();
  room = null;
  try { sessionStorage.removeItem('whisper.room'); } catch { /* ignore */ }
  showUnread(0, TITLE);
  $('chat').hidden = true;
  $('lobby').hidden = false;
}

let stateTicker = 0;
function showState(s) {
  const conn = $('conn');
  clearInterval(stateTicker);
  conn.dataset.state = s.state;
  if (s.state !== 'connected' && room) room.joined = false;
  const paint = () => {
    if (s.state === 'connected') conn.textContent = room && room.joined ? 'connected' : 'joining…';
    else if (s.state === 'connecting') conn.textContent = 'connecting…';
    else {
      const secs = Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000));
      conn.textContent = s.state === 'offline' ? `offline, retrying in ${secs} s` : `reconnecting in ${secs} s`;
    }
  };
  paint();
  if (s.retryAt) stateTicker = setInterval(paint, 1000);
}

function onClosed(code) {
  if (!room) return;
  room.joined = false;
  // What was sent but not confirmed may or may not have reached the room.
  for (const req of room.inFlight) if (req.kind === 'msg') markFailed(req.entry);
  room.inFlight = [];
  const why = closeSentence(code);
  $('chat-error').textContent = why ? `${why} Reconnecting…` : '';
}

function memberName(id) {
  const m = room.members.get(id);
  return m && m.name ? m.name : null;
}

function addMember(user) {
  const opened = open(room.messageKey, 'profile', user.avatar);
  const name = opened.ok && typeof opened.value.n === 'string' ? opened.value.n.slice(0, MAX_NAME) : null;
  room.members.set(user.id, { id: user.id, name });
  return name;
}

function renderMembers() {
  const list = $('member-list');
  list.replaceChildren();
  for (const m of room.members.values()) {
    const li = el('li', m.id === room.myId ? 'me' : m.name ? '' : 'unknown');
    li.textContent = m.id === room.myId ? `${room.name} (you)` : m.name || 'someone with another key';
    list.append(li);
  }
  $('member-count').textContent = String(room.members.size);
}

function onFrame(f) {
  if (!room) return;
  switch (f.type) {
    case 'userList': {
      room.members.clear();
      for (const u of f.users || []) addMember(u);
      renderMembers();
      const first = !room.everJoined;
      room.joined = room.everJoined = true;
      room.conn.healthy();
      showState({ state: 'connected' });
      $('chat-error').textContent = '';
      system(first ? 'You joined the room.' : 'Reconnected.');
      flushOutbox();
      break;
    }
    case 'userJoined':
      system(`${addMember(f.user) || 'Someone with another key'} joined.`);
      renderMembers();
      break;
    case 'userLeft': {
      const name = memberName(f.userId);
      room.members.delete(f.userId);
      setTyping(f.userId, false);
      renderMembers();
      system(`${name || 'Someone with another key'} left.`);
      break;
    }
    case 'message':
      onMessage(f);
      break;
    case 'userTyping':
      if (f.user && f.user.id !== room.myId) setTyping(f.user.id, !!f.isTyping);
      break;
    case 'reaction':
      onReaction(f);
      break;
    case 'error':
      onError(f);
      break;
    default:
  }
}

function timeOf(ts) {
  const t = el('time', 'when');
  const d = new Date(ts);
  if (!Number.isNaN(d.getTime())) {
    t.dateTime = d.toISOString();
    t.textContent = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }
  return t;
}

function appendToLog(node) {
  const log = $('log');
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  log.append(node);
  while (log.childElementCount > 500) log.firstElementChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function system(text) {
  appendToLog(el('p', 'msg system', text));
}

function messageEntry(who, text, mine) {
  const li = el('article', mine ? 'msg mine' : 'msg');
  const meta = el('div', 'meta');
  meta.append(el('span', 'who', who));
  const when = el('span', 'when');
  meta.append(when);
  if (mine) meta.append(el('span', 'mark', 'sending…'));
  li.append(meta, el('p', 'body', text));
  return { li, meta, when, id: null, reactions: new Map() };
}

function onMessage(f) {
  const mine = f.user && f.user.id === room.myId;
  if (mine) {
    const i = room.inFlight.findIndex((r) => r.kind === 'msg' && r.content === f.content);
    if (i >= 0) {
      const [req] = room.inFlight.splice(i, 1);
      confirmDelivered(req.entry, f);
    }
    return;
  }
  const opened = open(room.messageKey, 'msg', f.content);
  const sender = f.user ? room.members.get(f.user.id) : null;
  if (!opened.ok || typeof opened.value.t !== 'string') {
    if (sender && sender.name) {
      // The sender holds our key (its profile opened), so this was altered on the way.
      room.dropped++;
      const d = $('dropped');
      d.hidden = false;
      d.textContent = `${room.dropped} altered message${room.dropped === 1 ? ' was' : 's were'} dropped: someone tampered with them.`;
      return;
    }
    const entry = messageEntry('Someone with another key', "can't decrypt this message", false);
    entry.li.classList.add('undecryptable');
    entry.when.replaceWith(timeOf(f.timestamp));
    appendToLog(entry.li);
    notifyNew();
    return;
  }
  const who = typeof opened.value.n === 'string' ? opened.value.n.slice(0, MAX_NAME) : 'someone';
  const entry = messageEntry(who, opened.value.t, false);
  entry.when.replaceWith(timeOf(f.timestamp));
  attachReactions(entry, f.id);
  appendToLog(entry.li);
  setTyping(f.user.id, false);
  notifyNew();
}

function confirmDelivered(entry, f) {
  entry.when.replaceWith(timeOf(f.timestamp));
  const mark = entry.meta.querySelector('.mark');
  mark.textContent = '✓ delivered';
  mark.classList.add('delivered');
  attachReactions(entry, f.id);
}

function markFailed(entry) {
  const mark = entry.meta.querySelector('.mark');
  if (!mark || mark.classList.contains('delivered')) return;
  mark.textContent = 'not delivered';
  if (!entry.li.querySelector('.retry')) {
    const b = el('button', 'retry', 'Send again');
    b.type = 'button';
    b.onclick = () => {
      b.remove();
      mark.textContent = 'sending…';
      queueSend(entry, entry.text);
    };
    entry.li.append(b);
  }
}

// ---------------------------------------------------------------- reactions

function attachReactions(entry, id) {
  if (!id || entry.id) return;
  entry.id = id;
  room.messages.set(id, entry);
  while (room.messages.size > 500) room.messages.delete(room.messages.keys().next().value);
  const bar = el('div', 'reacts');
  const add = el('button', 'add', 'React');
  add.type = 'button';
  add.setAttribute('aria-expanded', 'false');
  const palette = el('div', 'palette');
  palette.hidden = true;
  for (const e of QUICK) {
    const b = el('button', '', e);
    b.type = 'button';
    b.setAttribute('aria-label', `React with ${e}`);
    b.onclick = () => {
      sendReaction(id, e);
      palette.hidden = true;
      add.setAttribute('aria-expanded', 'false');
    };
    palette.append(b);
  }
  add.onclick = () => {
    palette.hidden = !palette.hidden;
    add.setAttribute('aria-expanded', String(!palette.hidden));
  };
  bar.append(add, palette);
  entry.bar = bar;
  entry.li.append(bar);
}

function sendReaction(messageId, emoji) {
  if (!room.joined) {
    $('chat-error').textContent = 'Not connected: the reaction was not sent.';
    return;
  }
  room.conn.send({ type: 'reaction', data: { messageId, emoji } });
  room.inFlight.push({ kind: 'react' });
}

function onReaction(f) {
  if (f.user && f.user.id === room.myId) {
    const i = room.inFlight.findIndex((r) => r.kind === 'react');
    if (i >= 0) room.inFlight.splice(i, 1);
  }
  const entry = room.messages.get(f.messageId);
  if (!entry || !f.user || !QUICK.includes(f.emoji)) return;
  // A reaction toggles: every member applies the same sequence, so counts agree.
  const who = entry.reactions.get(f.emoji) || new Set();
  if (who.has(f.user.id)) who.delete(f.user.id);
  else who.add(f.user.id);
  entry.reactions.set(f.emoji, who);
  renderReactions(entry);
}

function renderReactions(entry) {
  for (const chip of entry.bar.querySelectorAll('.chip')) chip.remove();
  const add = entry.bar.querySelector('.add');
  for (const [emoji, who] of entry.reactions) {
    if (!who.size) continue;
    const mine = who.has(room.myId);
    const b = el('button', 'chip', `${emoji} ${who.size}`);
    b.type = 'button';
    b.setAttribute('aria-pressed', String(mine));
    b.setAttribute('aria-label', `${emoji} ${who.size} reaction${who.size === 1 ? '' : 's'}${mine ? ', yours included' : ''}`);
    b.onclick = () => sendReaction(entry.id, emoji);
    entry.bar.insertBefore(b, add);
  }
}

// ---------------------------------------------------------------- sending

function frameLimit() {
  return Number(hub.max_message_bytes) || 10240;
}

function updateLeft() {
  if (!room) return;
  const text = $('text').value;
  const left = frameLimit() - chatFrameLength(text, room.name);
  const p = $('left');
  // Base64 turns 3 bytes into 4: what is left of the frame, in bytes of text.
  if (left >= 0) {
    p.textContent = text ? `${Math.floor((left * 3) / 4)} bytes left` : '';
    p.classList.remove('over');
  } else {
    p.textContent = `${Math.ceil((-left * 3) / 4)} bytes too long`;
    p.classList.add('over');
  }
  $('send').disabled = left < 0 || Date.now() < room.blockedUntil;
}

function queueSend(entry, text) {
  entry.text = text;
  if (room.joined) sendNow(entry);
  else {
    entry.meta.querySelector('.mark').textContent = 'waiting for the connection…';
    room.outbox.push(entry);
  }
}

function sendNow(entry) {
  const content = seal(room.messageKey, 'msg', chatEnvelope(entry.text, room.name));
  entry.meta.querySelector('.mark').textContent = 'sending…';
  room.conn.send({ type: 'message', data: { content } });
  room.inFlight.push({ kind: 'msg', content, entry });
}

function flushOutbox() {
  const queued = room.outbox.splice(0);
  for (const entry of queued) sendNow(entry);
}

function onSubmit(ev) {
  ev.preventDefault();
  const box = $('text');
  const text = box.value;
  if (!text.trim() || $('send').disabled) return;
  if (chatFrameLength(text, room.name) > frameLimit()) return;
  const entry = messageEntry(room.name, text, true);
  appendToLog(entry.li);
  $('log').scrollTop = $('log').scrollHeight;
  queueSend(entry, text);
  box.value = '';
  autosize();
  stopTyping();
  updateLeft();
}

function onError(f) {
  const sentence = errorSentence(f);
  $('chat-error').textContent = sentence;
  const budgeted = ['RATE_LIMITED', 'INVALID_CONTENT', 'INVALID_EMOJI', 'MESSAGE_TOO_LARGE', 'NOT_IN_ROOM', 'INVALID_MESSAGE'];
  if (budgeted.includes(f.code) && room.inFlight.length) {
    // Replies keep the order of requests: the oldest open request failed.
    const req = room.inFlight.shift();
    if (req.kind === 'msg') markFailed(req.entry);
  }
  if (f.code === 'RATE_LIMITED') {
    room.blockedUntil = Date.now() + retrySeconds(f.message) * 1000;
    updateLeft();
    setTimeout(() => {
      updateLeft();
      if ($('chat-error').textContent === sentence) $('chat-error').textContent = '';
    }, retrySeconds(f.message) * 1000 + 50);
  }
  if (f.code === 'USER_ID_TAKEN') {
    room.myId = toB64u(crypto.getRandomValues(new Uint8Array(12)));
    sendJoin();
  }
}

// ---------------------------------------------------------------- typing

function onInput() {
  autosize();
  updateLeft();
  if (!room || !room.joined) return;
  const now = Date.now();
  if ($('text').value && now - room.typingSent > TYPING_EVERY_MS) {
    room.typingSent = now;
    room.conn.send({ type: 'typing', data: { isTyping: true } });
  }
  clearTimeout(room.typingIdle);
  room.typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  if (!room) return;
  clearTimeout(room.typingIdle);
  if (room.typingSent) {
    room.typingSent = 0;
    room.conn.send({ type: 'typing', data: { isTyping: false } });
  }
}

function setTyping(id, on) {
  clearTimeout(room.typers.get(id));
  if (on) room.typers.set(id, setTimeout(() => setTyping(id, false), TYPING_SHOWN_MS));
  else room.typers.delete(id);
  const names = [...room.typers.keys()].map((i) => memberName(i) || 'someone');
  $('typing').textContent = !names.length ? ''
    : names.length === 1 ? `${names[0]} is typing…`
    : names.length === 2 ? `${names[0]} and ${names[1]} are typing…`
    : 'Several people are typing…';
}

function autosize() {
  const t = $('text');
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight + 2, 128)}px`;
}

// ---------------------------------------------------------------- unread

function notifyNew() {
  if (document.visibilityState === 'visible' && document.hasFocus()) return;
  room.unread++;
  showUnread(room.unread, TITLE);
  if ($('opt-sound').checked) chime();
  if ($('opt-vibrate').checked) buzz();
}

function clearUnread() {
  if (room && room.unread && document.visibilityState === 'visible') {
    room.unread = 0;
    showUnread(0, TITLE);
  }
}

// ---------------------------------------------------------------- invite

const isLoopback = (h) => h === 'localhost' || h.endsWith('.localhost') || /^127\./.test(h) || h === '[::1]';

function inviteHosts() {
  const port = location.port ? `:${location.port}` : '';
  if (!isLoopback(location.hostname)) return [location.host];
  const hosts = [];
  if (hub.hostname) hosts.push(`${hub.hostname}${port}`);
  for (const a of hub.addresses || []) hosts.push(a.includes(':') ? `[${a}]${port}` : `${a}${port}`);
  return hosts.length ? hosts : [location.host];
}

function renderInvite() {
  const host = $('host-select').value || inviteHosts()[0];
  const link = `${location.protocol}//${host}${location.pathname}#${encodeKey(room.key)}`;
  $('invite-link').value = link;
  $('qr').replaceChildren(qrSvg(link));
}

function openInvite() {
  const byLink = !room.roomName;
  for (const id of ['invite-link', 'copy', 'qr']) $(id).closest('.row, .qr').hidden = !byLink;
  $('invite-link-label').hidden = !byLink;
  $('invite-help').textContent = byLink
    ? 'Anyone with this link can read and write in the room. Share it only with people you trust.'
    : `Tell them the room name "${room.roomName}" and the passphrase, away from this chat.`;
  if (!byLink) {
    $('host-choice').hidden = true;
    $('copied').textContent = '';
    $('invite').showModal();
    return;
  }
  const hosts = inviteHosts();
  const select = $('host-select');
  select.replaceChildren(...hosts.map((h) => el('option', '', h)));
  $('host-choice').hidden = !isLoopback(location.hostname) || hosts.length < 2;
  $('copied').textContent = isLoopback(location.hostname) && hosts[0] === location.host
    ? 'This address works only on the hub itself; the hub reported no network address.'
    : '';
  renderInvite();
  $('invite').showModal();
}

function copyInvite() {
  const input = $('invite-link');
  input.focus();
  input.select();
  // The clipboard API needs a secure context; execCommand works on plain http.
  const ok = document.execCommand('copy');
  $('copied').textContent = ok ? 'Copied.' : 'Select the link and copy it by hand.';
}

// ---------------------------------------------------------------- wiring

function togglePanel(id, force) {
  const panel = $(id);
  const show = force ?? panel.hidden;
  panel.hidden = !show;
  $(`${id}-btn`).setAttribute('aria-expanded', String(show));
}

async function loadHubInfo() {
  try {
    const r = await fetch('hub.json', { cache: 'no-store' });
    if (r.ok) hub = { ...hub, ...(await r.json()) };
  } catch { /* the defaults will do */ }
  updateLeft();
}

function init() {
  $('name').value = store.get('whisper.name') || '';
  $('opt-sound').checked = store.get('whisper.sound') === '1';
  $('opt-vibrate').checked = store.get('whisper.vibrate') === '1';
  readInviteFragment();
  loadHubInfo();

  $('new-room').onclick = () => {
    lobbyError('');
    const name = displayName();
    if (name) {
      enterRoom(newRoomKey(), name, '');
      openInvite();
    }
  };
  $('join-invite').onclick = () => {
    lobbyError('');
    const name = displayName();
    if (name && invitedKey) enterRoom(invitedKey, name, '');
  };
  $('lobby-form').onsubmit = (ev) => {
    ev.preventDefault();
    (invitedKey ? $('join-invite') : $('new-room')).click();
  };
  $('pass-form').onsubmit = joinByPassphrase;
  $('composer').onsubmit = onSubmit;
  $('text').addEventListener('input', onInput);
  $('text').addEventListener('keydown', (ev) => {
    // Enter sends, Shift+Enter breaks the line (on phones the keyboard's send key does the same).
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('members-btn').onclick = () => togglePanel('members');
  $('settings-btn').onclick = () => togglePanel('settings');
  $('invite-btn').onclick = openInvite;
  $('leave-btn').onclick = leaveRoom;
  $('copy').onclick = copyInvite;
  $('host-select').onchange = renderInvite;
  $('opt-sound').onchange = (ev) => {
    if (ev.target.checked) armSound();
    store.set('whisper.sound', ev.target.checked ? '1' : '0');
  };
  $('opt-vibrate').onchange = (ev) => store.set('whisper.vibrate', ev.target.checked ? '1' : '0');
  document.addEventListener('visibilitychange', clearUnread);
  addEventListener('focus', clearUnread);
  // Keep the newest messages and the input in view when the phone keyboard opens.
  window.visualViewport?.addEventListener('resize', () => {
    const log = $('log');
    log.scrollTop = log.scrollHeight;
  });

  // A reload (or a browser restoring the tab) returns to the room it was in.
  let saved = null;
  try { saved = JSON.parse(sessionStorage.getItem('whisper.room') || 'null'); } catch { /* ignore */ }
  const savedKey = saved && decodeKey(saved.k);
  const name = store.get('whisper.name');
  if (!invitedKey && savedKey && name) enterRoom(savedKey, name, saved.r || '');
}

init();
