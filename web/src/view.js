// The room's frame around the log: the member list, the typing line, the
// connection state, warnings and panels. Functions here touch the DOM only;
// they take what to show as arguments.
import { $, el } from './dom.js';

/** The member list: `people` of `{name, ids, me}` (tabs of one browser are one person). */
export function renderMembers(people, myName) {
  const list = $('member-list');
  list.replaceChildren();
  for (const p of people) {
    const li = el('li', p.me ? 'me' : p.name ? '' : 'unknown');
    const tabs = p.ids.length > 1 ? `, ${p.ids.length} tabs` : '';
    li.textContent = p.me ? `${myName} (you${tabs})` : p.name ? `${p.name}${p.ids.length > 1 ? ` (${p.ids.length} tabs)` : ''}` : 'someone with another key';
    li.title = li.textContent;
    list.append(li);
  }
  $('member-count').textContent = String(people.length);
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

/** The hint for a passphrase that is probably wrong ('' hides it). */
export function showWrongKey(text) {
  $('wrong-key').hidden = !text;
  $('wrong-key-text').textContent = text;
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
