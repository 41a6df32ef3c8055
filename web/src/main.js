// The hub's chat page: lobby, room, invite. Everything a person types is
// sealed by envelope.js before it leaves the page; the relay sees a room id,
// a random user id, a neutral handle (frames.js) and ciphertext.
//
// Modules: lobby.js (name, invite link, saved rooms, new room, passphrase),
// saved.js (rooms remembered in this browser), room.js (being in a room:
// connection and incoming frames), state.js (the room's state, no DOM),
// frames.js (every frame sent), compose.js (the message box, sending, typing,
// the rate-limit pause), log.js (the message log), cues.js (unread cues),
// reactions.js, links.js (safe links), view.js (members, state, panels),
// invite.js (the invite dialog), envelope.js (keys and sealing),
// connection.js (the WebSocket).
import { $, store, tabStore } from './dom.js';
import { decodeKey } from './envelope.js';
import { armSound } from './notify.js';
import { loadHubInfo } from './hub.js';
import { initInvite, openInvite } from './invite.js';
import { initLobby, invited, readInviteFragment, retype, showLeft, takeInvite } from './lobby.js';
import { current, enterRoom, leaveRoom } from './room.js';
import { onInput, submit, updateLeft } from './compose.js';
import { seen } from './cues.js';
import { scrollToEnd } from './log.js';
import { togglePanel } from './view.js';

/** A phone or tablet without a keyboard: Enter makes a new line there, Send sends. */
const touchOnly = matchMedia('(hover: none) and (pointer: coarse)');
const setEnterHint = () => $('text').setAttribute('enterkeyhint', touchOnly.matches ? 'enter' : 'send');

function init() {
  $('opt-sound').checked = store.get('whisper.sound') === '1';
  $('opt-vibrate').checked = store.get('whisper.vibrate') === '1';
  initLobby();
  initInvite();
  readInviteFragment();
  // An invite typed or pasted into this tab changes only the fragment: no reload.
  addEventListener('hashchange', takeInvite);
  loadHubInfo().then(() => updateLeft(current()));

  $('composer').onsubmit = (ev) => {
    ev.preventDefault();
    submit(current());
  };
  $('text').addEventListener('input', () => onInput(current()));
  setEnterHint();
  touchOnly.addEventListener?.('change', setEnterHint);
  $('text').addEventListener('keydown', (ev) => {
    // Enter sends and Shift+Enter breaks the line; on a touch-only device, as in
    // phone chat apps, Enter breaks the line and the Send button sends.
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && !touchOnly.matches) {
      ev.preventDefault();
      $('composer').requestSubmit();
    }
  });
  $('members-btn').onclick = () => togglePanel('members');
  $('settings-btn').onclick = () => togglePanel('settings');
  $('invite-btn').onclick = () => openInvite(current());
  $('leave-btn').onclick = () => {
    const left = leaveRoom();
    if (left) showLeft(left);
  };
  $('retype').onclick = retype;
  $('jump').onclick = () => {
    scrollToEnd();
    seen(current());
  };
  $('log').addEventListener('scroll', () => seen(current(), true), { passive: true });
  $('opt-sound').onchange = (ev) => {
    if (ev.target.checked) armSound();
    store.set('whisper.sound', ev.target.checked ? '1' : '0');
  };
  $('opt-vibrate').onchange = (ev) => store.set('whisper.vibrate', ev.target.checked ? '1' : '0');
  document.addEventListener('visibilitychange', () => seen(current()));
  addEventListener('focus', () => seen(current()));
  // Keep the newest messages and the input in view when the phone keyboard opens.
  window.visualViewport?.addEventListener('resize', () => {
    if (current()) scrollToEnd();
  });

  // A reload (or a browser restoring the tab) returns to the room it was in.
  let saved = null;
  try { saved = JSON.parse(tabStore.get('whisper.room') || 'null'); } catch { /* ignore */ }
  const savedKey = saved && decodeKey(saved.k);
  const name = store.get('whisper.name');
  if (!invited() && savedKey && name) enterRoom(savedKey, name, saved.r || '', saved.t || '');
}

init();
