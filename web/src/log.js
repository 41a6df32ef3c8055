// The message log: bubbles, marks on one's own messages, system lines, and
// the cues of a conversation that went on while the reader was elsewhere
// (an unread divider, and a "new messages" button while scrolled up).
import { $, el, button } from './dom.js';
import { linkNodes } from './links.js';

/** Entries kept in the log. */
export const LOG_LIMIT = 500;
/** How close to the end (px) counts as reading the newest messages. */
const NEAR_END = 80;

/** A <time> for a relay timestamp. */
export function timeOf(ts) {
  const t = el('time', 'when');
  const d = new Date(ts);
  if (!Number.isNaN(d.getTime())) {
    t.dateTime = d.toISOString();
    t.textContent = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }
  return t;
}

/** Whether the log shows its newest entries. */
export function atEnd() {
  const log = $('log');
  return log.scrollHeight - log.scrollTop - log.clientHeight < NEAR_END;
}

/** Appends to the log, following the end only when the reader was there; returns whether it followed. */
export function appendToLog(node) {
  const log = $('log');
  const follow = atEnd();
  log.append(node);
  while (log.childElementCount > LOG_LIMIT) log.firstElementChild.remove();
  if (follow) log.scrollTop = log.scrollHeight;
  return follow;
}

/** Scrolls the log to its newest entry (and the "new messages" button goes). */
export function scrollToEnd() {
  const log = $('log');
  log.scrollTop = log.scrollHeight;
  showJump(0);
}

/** A centred line in the log ("Bob joined."). */
export function system(text) {
  appendToLog(el('p', 'msg system', text));
}

/** Shows the "new messages" button with `count` unseen messages below (0 hides it). */
export function showJump(count) {
  const b = $('jump');
  b.hidden = !count;
  b.textContent = count === 1 ? '↓ 1 new message' : `↓ ${count} new messages`;
}

/** Puts the unread divider before `node` (the first message not seen), moving an older one. */
export function placeDivider(node) {
  $('log').querySelector('.divider')?.remove();
  const d = el('p', 'divider');
  d.setAttribute('role', 'separator');
  d.append(el('span', '', 'New messages'));
  node.before(d);
}

/**
 * A message bubble: `{li, meta, when, mark, id}`. `mine` adds a mark
 * ("sending…", or `markText` when given).
 */
export function messageEntry(who, text, mine, markText = 'sending…') {
  const li = el('article', mine ? 'msg mine' : 'msg');
  li.tabIndex = -1;
  const meta = el('div', 'meta');
  const whoEl = el('span', 'who', who);
  whoEl.title = who;
  meta.append(whoEl);
  const when = el('span', 'when');
  meta.append(when);
  const mark = mine ? el('span', 'mark', markText) : null;
  if (mark) meta.append(mark);
  const body = el('p', 'body');
  body.append(...linkNodes(text));
  li.append(meta, body);
  return { li, meta, when, mark, id: null };
}

/** Shows the relay's timestamp on `entry`. */
export function setTime(entry, ts) {
  const t = timeOf(ts);
  entry.when.replaceWith(t);
  entry.when = t;
}

/** Sets the mark of one's own message. */
export function setMark(entry, text) {
  entry.mark.textContent = text;
  entry.mark.classList.remove('failed');
}

/** Marks one's own message as echoed by the relay. */
export function markDelivered(entry) {
  entry.mark.textContent = '✓ delivered';
  entry.mark.classList.remove('failed');
  entry.mark.classList.add('delivered');
  entry.li.querySelector('.retry')?.remove();
}

/** Whether one's own message was echoed already. */
export const isDelivered = (entry) => !entry.mark || entry.mark.classList.contains('delivered');

/**
 * Marks one's own message as not delivered, saying why (`reason`), with a
 * "Send again" button calling `onRetry`.
 */
export function markFailed(entry, reason, onRetry) {
  if (isDelivered(entry)) return;
  const follow = atEnd();
  entry.mark.textContent = reason ? `not delivered: ${reason}` : 'not delivered';
  entry.mark.classList.add('failed');
  if (!entry.li.querySelector('.retry')) {
    const b = button('retry', 'Send again', () => {
      b.remove();
      setMark(entry, 'sending…');
      onRetry();
    });
    entry.li.append(b);
  }
  // The bubble grew: keep it in view for a reader at the end.
  if (follow) $('log').scrollTop = $('log').scrollHeight;
}

/** The message undecryptable for this page, from someone with another key. */
export function undecryptableEntry(ts) {
  const entry = messageEntry('Someone with another key', "can't decrypt this message", false);
  entry.li.classList.add('undecryptable');
  setTime(entry, ts);
  return entry;
}
