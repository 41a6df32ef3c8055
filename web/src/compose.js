// What this page says in a room: the message box (bytes left, sending,
// the queue while disconnected, the pause after the hub's rate limit),
// reactions and the typing signal. Every function takes the room (a
// RoomState with its `conn`) it acts on.
import { $ } from './dom.js';
import { frameLimit } from './hub.js';
import { seal, chatEnvelope, chatFrameLength } from './envelope.js';
import { messageFrame, reactionFrame, typingFrame } from './frames.js';
import { reactionEmoji } from './state.js';
import { saveDraft } from './drafts.js';
import { autosize, chatError } from './view.js';
import { appendToLog, markFailed, messageEntry, scrollToEnd, setPending } from './log.js';

const TYPING_EVERY_MS = 3000;
const TYPING_IDLE_MS = 4000;

const BLANK = 'Only spaces so far: there is nothing to send.';

/** Shows the bytes left in the message box and enables Send when it can go. */
export function updateLeft(room) {
  if (!room) return;
  const text = $('text').value;
  const left = frameLimit() - chatFrameLength(text, room.name);
  const p = $('left');
  const blank = !text.trim();
  // Base64 turns 3 bytes into 4: what is left of the frame, in bytes of text.
  if (left < 0) {
    p.textContent = `${Math.ceil((-left * 3) / 4)} bytes too long`;
    p.classList.add('over');
  } else {
    p.textContent = blank && text ? BLANK : text ? `${Math.floor((left * 3) / 4)} bytes left` : '';
    p.classList.remove('over');
  }
  $('send').disabled = blank || left < 0 || Date.now() < room.blockedUntil;
}

let blockTicker = 0;
let waited = false;
const secondsLeft = (room) => Math.max(1, Math.ceil((room.blockedUntil - Date.now()) / 1000));

function paintBlock(room) {
  if (Date.now() >= room.blockedUntil) {
    clearInterval(blockTicker);
    if ($('chat-error').dataset.kind === 'block') {
      chatError('');
      delete $('chat-error').dataset.kind;
    }
    updateLeft(room);
    return;
  }
  const n = secondsLeft(room);
  chatError(waited ? `Not sent yet: wait ${n} s, your text stays.` : `Slow down; you can send again in ${n} s.`);
  $('chat-error').dataset.kind = 'block';
}

/** The hub's rate limit: sending pauses for `ms`, with a countdown in the error line. */
export function block(room, ms) {
  room.blockedUntil = Date.now() + ms;
  waited = false;
  clearInterval(blockTicker);
  paintBlock(room);
  blockTicker = setInterval(() => paintBlock(room), 250);
  updateLeft(room);
}

/** Stops the countdown (the room was left). */
export const stopBlock = () => clearInterval(blockTicker);

function sendNow(room, entry) {
  const content = seal(room.messageKey, 'msg', chatEnvelope(entry.text, room.name));
  setPending(entry, 'sending…');
  room.conn.send(messageFrame(content));
  room.expect({ kind: 'msg', content, entry });
}

/**
 * Sends the message of `entry` now, or once the room is joined again and
 * caught up (after what waits already, so messages keep the order they
 * were typed in).
 */
export function queueSend(room, entry, text) {
  entry.text = text;
  if (room.joined && !room.replaying && !room.outbox.length) sendNow(room, entry);
  else if (room.queue(entry)) setPending(entry, room.joined ? 'sending…' : 'waiting for the connection…');
  else markFailed(entry, 'too many waiting', () => queueSend(room, entry, text));
}

/** Sends what was typed while disconnected or catching up (the room is joined and caught up). */
export function flushOutbox(room) {
  for (const entry of room.takeOutbox()) sendNow(room, entry);
}

/** Sends again what went out on a dropped connection and, the catch-up shows, never reached the room. */
export function resendUnconfirmed(room) {
  for (const req of room.takeUnconfirmed()) sendNow(room, req.entry);
}

/** The composer's submit: shows the message at once and sends it, or says why not. */
export function submit(room) {
  const box = $('text');
  const text = box.value;
  if (!room) return;
  if (!text.trim()) {
    $('left').textContent = text ? BLANK : 'Type a message first.';
    return;
  }
  if (Date.now() < room.blockedUntil) {
    waited = true;
    paintBlock(room);
    const line = $('chat-error');
    line.classList.remove('nudge');
    void line.offsetWidth; // restart the animation
    line.classList.add('nudge');
    return;
  }
  if (chatFrameLength(text, room.name) > frameLimit()) return;
  const entry = messageEntry(room.name, text, true);
  entry.li.classList.add('pending');
  appendToLog(entry.li);
  scrollToEnd();
  queueSend(room, entry, text);
  box.value = '';
  saveDraft(room.roomId, '');
  autosize();
  stopTyping(room);
  updateLeft(room);
}

/** Gives reaction `emoji` to message `messageId`, or takes one's own back. */
export function sendReaction(room, messageId, emoji) {
  if (!room.joined) {
    chatError('Not connected: the reaction was not sent.');
    return;
  }
  const mine = room.reactionSummary(messageId).some((x) => x.emoji === emoji && x.mine);
  room.conn.send(reactionFrame(messageId, reactionEmoji(emoji, !mine)));
  room.expect({ kind: 'react' });
}

/** The message box changed: resize, count, and say "typing" now and then. */
export function onInput(room) {
  autosize();
  updateLeft(room);
  if (room) saveDraft(room.roomId, $('text').value);
  if (!room || !room.joined) return;
  const now = Date.now();
  if ($('text').value && now - room.typingSent > TYPING_EVERY_MS) {
    room.typingSent = now;
    room.conn.send(typingFrame(true));
  }
  clearTimeout(room.typingIdle);
  room.typingIdle = setTimeout(() => stopTyping(room), TYPING_IDLE_MS);
}

/** Says "no longer typing" if typing was said. */
export function stopTyping(room) {
  if (!room) return;
  clearTimeout(room.typingIdle);
  if (room.typingSent) {
    room.typingSent = 0;
    room.conn.send(typingFrame(false));
  }
}
