// The lobby: a name, then the room of an invite link, a room of one's own
// (remembered in this browser), a new room, or a room by name and passphrase
// (its key derived by scrypt in a Worker).
import { $, el, button, store } from './dom.js';
import { newRoomKey, decodeKey } from './envelope.js';
import { openInvite } from './invite.js';
import { decodeInvite } from './invitecode.js';
import { chatError } from './view.js';
import { MAX_NAME, current, cut, enterRoom, leaveRoom } from './room.js';
import { forgetRoom, rememberRoom, savedRooms } from './saved.js';

let invitedKey = null;

/** The room key of the invite link this page was opened with, or null. */
export const invited = () => invitedKey;

/** The lobby's error line ('' clears it); `id` 'pass-error' for the passphrase form's. */
export function lobbyError(text, id = 'lobby-error') {
  $(id).textContent = text;
  if (text && id === 'lobby-error') $('lobby-form').scrollIntoView({ block: 'nearest' });
}

const tidyName = () => $('name').value.trim().replace(/\s+/g, ' ');

/** Says so when the name typed is longer than others will see it. */
function checkNameLength() {
  const full = tidyName();
  const shown = cut(full);
  $('name-cut').textContent = shown.length < full.length
    ? `Names are cut to ${MAX_NAME} characters: others will see "${shown}".`
    : '';
}

/** The name typed, tidied and remembered; null (with a hint beside the name, focused) when empty. */
function displayName() {
  const name = cut(tidyName());
  if (!name) {
    lobbyError('Type your name first: it is shown to the others in the room.');
    $('name').focus();
    return null;
  }
  store.set('whisper.name', name);
  return name;
}

const DAMAGED = 'This invite link is damaged: a character was changed, added or left out. Ask for it again.';

/**
 * Reads an invite from the address's fragment, then removes it from there.
 * Returns the invite ({key, legacy}), or null (none, or damaged: then the
 * lobby says so and nothing is joined).
 */
export function readInviteFragment() {
  const frag = location.hash.slice(1);
  if (!frag) return null;
  // The key must not stay in the address bar, the history or a bookmark.
  history.replaceState(null, '', location.pathname + location.search);
  const invite = decodeInvite(frag);
  invitedKey = invite ? invite.key : null;
  $('invited').hidden = !invite;
  $('invite-old').hidden = !invite || !invite.legacy;
  $('new-room').classList.replace(invite ? 'primary' : 'secondary', invite ? 'secondary' : 'primary');
  if (!invite) lobbyError(DAMAGED);
  return invite;
}

const sameKey = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

/**
 * An invite typed or pasted into this tab (only the fragment changed): taken
 * up at once. In the lobby it is offered as on arrival; in a room, a link to
 * another room goes there (the room left stays in Your rooms), and a damaged
 * one is reported without leaving.
 */
export function takeInvite() {
  if (!location.hash.slice(1)) return;
  const r = current();
  if (!r) {
    lobbyError('');
    if (readInviteFragment()) $('join-invite').focus();
    return;
  }
  const invite = readInviteFragment();
  if (!invite) {
    chatError(`${DAMAGED} You are still in this room.`);
    return;
  }
  invitedKey = null;
  $('invited').hidden = true;
  $('new-room').classList.replace('secondary', 'primary');
  if (!r.roomName && sameKey(invite.key, r.key)) return;
  leaveRoom();
  enterRoom(invite.key, r.name, '');
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
  lobbyError('', 'pass-error');
  const name = displayName();
  if (!name) return;
  const roomName = $('room-name').value.trim();
  const pass = $('passphrase').value;
  if (!roomName || !pass) {
    lobbyError('Type both the room name and the passphrase.', 'pass-error');
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
    lobbyError(`Could not derive the room key: ${e.message}`, 'pass-error');
  } finally {
    btn.disabled = false;
    btn.textContent = 'Enter the room';
  }
}

/** Lists the rooms remembered in this browser, each to open or forget. */
export function renderSaved() {
  const list = savedRooms();
  $('saved').hidden = !list.length;
  $('saved-list').replaceChildren(...list.map((room) => {
    const li = el('li');
    const go = button('open', room.l, () => {
      const name = displayName();
      if (name) enterRoom(decodeKey(room.k), name, room.r, room.n);
    });
    go.disabled = !decodeKey(room.k);
    const forget = button('forget', 'Forget', () => {
      forgetRoom(room);
      const undo = button('', 'Undo', () => {
        rememberRoom(room);
        renderSaved();
        $('saved-list').querySelector('.open')?.focus();
      });
      li.replaceChildren(el('span', 'gone', `"${room.l}" forgotten.`), undo);
      undo.focus();
    });
    forget.setAttribute('aria-label', `Forget ${room.l}`);
    li.append(go, forget);
    return li;
  }));
}

/** Back in the lobby after Leave: a way straight back, with the focus on it. */
export function showLeft(left) {
  lobbyError('');
  renderSaved();
  $('left-text').textContent = `You left "${left.l}". It stays in Your rooms below until you forget it.`;
  $('left-notice').hidden = false;
  $('rejoin').onclick = () => {
    const name = displayName();
    if (name) enterRoom(decodeKey(left.k), name, left.r, left.n);
  };
  $('rejoin').focus();
}

/** Leaves a passphrase room whose passphrase was probably mistyped, to type it again. */
export function retype() {
  const left = leaveRoom();
  if (!left) return;
  forgetRoom(left);
  renderSaved();
  $('left-notice').hidden = true;
  $('pass-box').open = true;
  $('room-name').value = left.r;
  $('passphrase').value = '';
  lobbyError('Type the passphrase again, as the others typed it.', 'pass-error');
  $('passphrase').focus();
}

/** Wires the lobby's controls. */
export function initLobby() {
  $('name').value = store.get('whisper.name') || '';
  $('name').addEventListener('input', checkNameLength);
  checkNameLength();
  renderSaved();
  $('new-form').onsubmit = (ev) => {
    ev.preventDefault();
    lobbyError('');
    const name = displayName();
    if (name) {
      enterRoom(newRoomKey(), name, '', $('new-title').value.trim() || `${name}'s room`, true);
      $('new-title').value = '';
      openInvite(current());
    }
  };
  $('join-invite').onclick = () => {
    lobbyError('');
    const name = displayName();
    if (name && invitedKey) enterRoom(invitedKey, name, '');
  };
  $('lobby-form').onsubmit = (ev) => {
    ev.preventDefault();
    if (invitedKey) $('join-invite').click();
    else $('new-form').requestSubmit();
  };
  $('pass-form').onsubmit = joinByPassphrase;
}
