// The hub's chat page: lobby, room, invite. Everything a person types is
// sealed by envelope.js before it leaves the page; the relay sees a room id,
// a random user id, a neutral handle (frames.js) and ciphertext.
//
// Modules: lobby.js (name, new room, invite link, passphrase), room.js (being
// in a room: connection and incoming frames), state.js (the room's state, no
// DOM), frames.js (every frame sent), compose.js (the message box, sending,
// typing), view.js (the log and the room's look), invite.js (the invite
// dialog), envelope.js (keys and sealing), connection.js (the WebSocket).
import { $, store, tabStore } from './dom.js';
import { decodeKey } from './envelope.js';
import { armSound } from './notify.js';
import { loadHubInfo } from './hub.js';
import { initInvite, openInvite } from './invite.js';
import { initLobby, invited, readInviteFragment } from './lobby.js';
import { clearUnread, current, enterRoom, leaveRoom } from './room.js';
import { onInput, submit, updateLeft } from './compose.js';
import { scrollToEnd, togglePanel } from './view.js';

function init() {
  $('opt-sound').checked = store.get('whisper.sound') === '1';
  $('opt-vibrate').checked = store.get('whisper.vibrate') === '1';
  initLobby();
  initInvite();
  readInviteFragment();
  loadHubInfo().then(() => updateLeft(current()));

  $('composer').onsubmit = (ev) => {
    ev.preventDefault();
    submit(current());
  };
  $('text').addEventListener('input', () => onInput(current()));
  $('text').addEventListener('keydown', (ev) => {
    // Enter sends, Shift+Enter breaks the line (on phones the keyboard's send key does the same).
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('members-btn').onclick = () => togglePanel('members');
  $('settings-btn').onclick = () => togglePanel('settings');
  $('invite-btn').onclick = () => openInvite(current());
  $('leave-btn').onclick = leaveRoom;
  $('opt-sound').onchange = (ev) => {
    if (ev.target.checked) armSound();
    store.set('whisper.sound', ev.target.checked ? '1' : '0');
  };
  $('opt-vibrate').onchange = (ev) => store.set('whisper.vibrate', ev.target.checked ? '1' : '0');
  document.addEventListener('visibilitychange', clearUnread);
  addEventListener('focus', clearUnread);
  // Keep the newest messages and the input in view when the phone keyboard opens.
  window.visualViewport?.addEventListener('resize', scrollToEnd);

  // A reload (or a browser restoring the tab) returns to the room it was in.
  let saved = null;
  try { saved = JSON.parse(tabStore.get('whisper.room') || 'null'); } catch { /* ignore */ }
  const savedKey = saved && decodeKey(saved.k);
  const name = store.get('whisper.name');
  if (!invited() && savedKey && name) enterRoom(savedKey, name, saved.r || '');
}

init();
