// The lobby: a name, then a new room, the room of an invite link, or a room
// by name and passphrase (its key derived by scrypt in a Worker).
import { $, store } from './dom.js';
import { newRoomKey, decodeKey } from './envelope.js';
import { openInvite } from './invite.js';
import { MAX_NAME, current, enterRoom } from './room.js';

let invitedKey = null;

/** The room key of the invite link this page was opened with, or null. */
export const invited = () => invitedKey;

/** The lobby's error line ('' clears it). */
export function lobbyError(text) {
  $('lobby-error').textContent = text;
}

/** The name typed, tidied and remembered; null (with a hint) when empty. */
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

/** Reads an invite key from the address's fragment, then removes it from there. */
export function readInviteFragment() {
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

/** Wires the lobby's controls. */
export function initLobby() {
  $('name').value = store.get('whisper.name') || '';
  $('new-room').onclick = () => {
    lobbyError('');
    const name = displayName();
    if (name) {
      enterRoom(newRoomKey(), name, '');
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
    (invitedKey ? $('join-invite') : $('new-room')).click();
  };
  $('pass-form').onsubmit = joinByPassphrase;
}
