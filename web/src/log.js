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

/**
 * Appends to the log, following the end only when the reader was there;
 * returns whether it followed. One's own messages that the hub does not have
 * yet stay at the end (class `pending`): what arrives meanwhile goes above
 * them, in the room's order.
 */
export function appendToLog(node) {
  const log = $('log');
  const follow = atEnd();
  const pending = node.classList.contains('pending') ? null : log.querySelector(':scope > .pending');
  if (pending) pending.before(node);
  else log.append(node);
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

/** One's own message is on its way (again): it goes to the end, below what the room has. */
export function setPending(entry, text) {
  setMark(entry, text);
  entry.li.classList.add('pending');
  if (entry.li.isConnected) $('log').append(entry.li);
}

/**
 * Marks one's own message as sent: the hub echoed it, so the room has it, and
 * the hub keeps it for members who come back later. It takes its place in
 * the room's order: above one's messages still on their way.
 */
export function markSent(entry) {
  entry.mark.textContent = '✓ sent';
  entry.mark.title = 'The hub has it: everyone in the room gets it, also those who come back within its catch-up time.';
  entry.mark.classList.remove('failed');
  entry.mark.classList.add('delivered');
  entry.li.querySelector('.retry')?.remove();
  const li = entry.li;
  li.classList.remove('pending');
  const first = li.isConnected && $('log').querySelector(':scope > .pending');
  if (first && first.compareDocumentPosition(li) & Node.DOCUMENT_POSITION_FOLLOWING) first.before(li);
}

/** Whether one's own message was echoed already. */
export const isDelivered = (entry) => !entry.mark || entry.mark.classList.contains('delivered');

/**
 * Marks one's own message as not sent, saying why (`reason`), with a
 * "Send again" button calling `onRetry`.
 */
export function markFailed(entry, reason, onRetry) {
  if (isDelivered(entry)) return;
  const follow = atEnd();
  entry.li.classList.remove('pending');
  entry.mark.textContent = reason ? `not sent: ${reason}` : 'not sent';
  entry.mark.classList.add('failed');
  if (!entry.li.querySelector('.retry')) {
    const b = button('retry', 'Send again', () => {
      b.remove();
      onRetry();
    });
    entry.li.append(b);
  }
  // The bubble grew: keep it in view for a reader at the end.
  if (follow) $('log').scrollTop = $('log').scrollHeight;
}

/** A quiet line in the log, before `before` if given (else at the end): "Some earlier messages may be missing". */
export function quietLine(text, cls, before = null) {
  const p = el('p', `msg system ${cls}`, text);
  if (before && before.isConnected) before.before(p);
  else appendToLog(p);
  return p;
}

/** The message undecryptable for this page, from someone with another key. */
export function undecryptableEntry(ts) {
  const entry = messageEntry('Someone with another key', "can't decrypt this message", false);
  entry.li.classList.add('undecryptable');
  setTime(entry, ts);
  return entry;
}
