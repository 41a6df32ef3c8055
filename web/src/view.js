// What the room looks like: the message log, marks on one's own messages,
// reaction chips, the member list, the typing line and the connection state.
// Functions of this module touch the DOM only; they take what to show as
// arguments and call back for what a person does.
import { $, el, button } from './dom.js';

/** The reactions offered (the relay accepts any emoji; the page shows these). */
export const QUICK = ['👍', '❤️', '😂', '😮', '🎉'];
/** Entries kept in the log. */
export const LOG_LIMIT = 500;

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

/** Appends to the log, following the bottom only when the reader was there. */
export function appendToLog(node) {
  const log = $('log');
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  log.append(node);
  while (log.childElementCount > LOG_LIMIT) log.firstElementChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

/** Scrolls the log to its newest entry. */
export function scrollToEnd() {
  const log = $('log');
  log.scrollTop = log.scrollHeight;
}

/** A centred line in the log ("Bob joined."). */
export function system(text) {
  appendToLog(el('p', 'msg system', text));
}

/** A message bubble: `{li, meta, when, mark, id}`; `mine` adds a mark ("sending…"). */
export function messageEntry(who, text, mine) {
  const li = el('article', mine ? 'msg mine' : 'msg');
  const meta = el('div', 'meta');
  meta.append(el('span', 'who', who));
  const when = el('span', 'when');
  meta.append(when);
  const mark = mine ? el('span', 'mark', 'sending…') : null;
  if (mark) meta.append(mark);
  li.append(meta, el('p', 'body', text));
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
}

/** Marks one's own message as echoed by the relay. */
export function markDelivered(entry) {
  entry.mark.textContent = '✓ delivered';
  entry.mark.classList.add('delivered');
}

/** Whether one's own message was echoed already. */
export const isDelivered = (entry) => !entry.mark || entry.mark.classList.contains('delivered');

/** Marks one's own message as not delivered, with a "Send again" button calling `onRetry`. */
export function markFailed(entry, onRetry) {
  if (isDelivered(entry)) return;
  entry.mark.textContent = 'not delivered';
  if (entry.li.querySelector('.retry')) return;
  const b = button('retry', 'Send again', () => {
    b.remove();
    entry.mark.textContent = 'sending…';
    onRetry();
  });
  entry.li.append(b);
}

/** The message undecryptable for this page, from someone with another key. */
export function undecryptableEntry(ts) {
  const entry = messageEntry('Someone with another key', "can't decrypt this message", false);
  entry.li.classList.add('undecryptable');
  setTime(entry, ts);
  return entry;
}

/** Adds the "React" button and its palette to `entry`; `onPick(emoji)` sends one. */
export function addReactionBar(entry, onPick) {
  const bar = el('div', 'reacts');
  const add = button('add', 'React');
  add.setAttribute('aria-expanded', 'false');
  const palette = el('div', 'palette');
  palette.hidden = true;
  const show = (open) => {
    palette.hidden = !open;
    add.setAttribute('aria-expanded', String(open));
  };
  for (const e of QUICK) {
    const b = button('', e, () => {
      onPick(e);
      show(false);
    });
    b.setAttribute('aria-label', `React with ${e}`);
    palette.append(b);
  }
  add.onclick = () => show(palette.hidden);
  bar.append(add, palette);
  entry.bar = bar;
  entry.li.append(bar);
}

/** Shows reaction chips (emoji -> Set of user ids) on `entry`; a chip click calls `onToggle(emoji)`. */
export function renderReactions(entry, reactions, myId, onToggle) {
  for (const chip of entry.bar.querySelectorAll('.chip')) chip.remove();
  const add = entry.bar.querySelector('.add');
  for (const [emoji, who] of reactions) {
    if (!who.size) continue;
    const mine = who.has(myId);
    const b = button('chip', `${emoji} ${who.size}`, () => onToggle(emoji));
    b.setAttribute('aria-pressed', String(mine));
    b.setAttribute('aria-label', `${emoji} ${who.size} reaction${who.size === 1 ? '' : 's'}${mine ? ', yours included' : ''}`);
    entry.bar.insertBefore(b, add);
  }
}

/** The member list: `members` of `{id, name}`, one's own entry first as it comes. */
export function renderMembers(members, myId, myName) {
  const list = $('member-list');
  list.replaceChildren();
  let n = 0;
  for (const m of members) {
    const li = el('li', m.id === myId ? 'me' : m.name ? '' : 'unknown');
    li.textContent = m.id === myId ? `${myName} (you)` : m.name || 'someone with another key';
    list.append(li);
    n++;
  }
  $('member-count').textContent = String(n);
}

/** The typing line for the names of those typing. */
export function renderTyping(names) {
  $('typing').textContent = !names.length ? ''
    : names.length === 1 ? `${names[0]} is typing…`
    : names.length === 2 ? `${names[0]} and ${names[1]} are typing…`
    : 'Several people are typing…';
}

let stateTicker = 0;
/** The connection badge for `s` ({state, retryAt}); `joined()` tells whether the room was joined. */
export function showConnState(s, joined) {
  const conn = $('conn');
  clearInterval(stateTicker);
  conn.dataset.state = s.state;
  const paint = () => {
    if (s.state === 'connected') conn.textContent = joined() ? 'connected' : 'joining…';
    else if (s.state === 'connecting') conn.textContent = 'connecting…';
    else {
      const secs = Math.max(0, Math.ceil((s.retryAt - Date.now()) / 1000));
      conn.textContent = s.state === 'offline' ? `offline, retrying in ${secs} s` : `reconnecting in ${secs} s`;
    }
  };
  paint();
  if (s.retryAt) stateTicker = setInterval(paint, 1000);
}

/** Stops the connection badge's countdown. */
export const stopConnTicker = () => clearInterval(stateTicker);

/** The count of altered messages that were dropped. */
export function showDropped(n) {
  const d = $('dropped');
  d.hidden = !n;
  d.textContent = n ? `${n} altered message${n === 1 ? ' was' : 's were'} dropped: someone tampered with them.` : '';
}

/** The room's error line ('' clears it). */
export const chatError = (text) => {
  $('chat-error').textContent = text;
};

/** Opens or closes the panel `id` (members, settings); `force` to set. */
export function togglePanel(id, force) {
  const panel = $(id);
  const show = force ?? panel.hidden;
  panel.hidden = !show;
  $(`${id}-btn`).setAttribute('aria-expanded', String(show));
}

/** Grows the message box with its text, up to 8 rem. */
export function autosize() {
  const t = $('text');
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight + 2, 128)}px`;
}
