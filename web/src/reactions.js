// Reactions, compactly: chips only where there are reactions, and a small
// "React" button that shows on hover and keyboard focus (a long press on a
// touch screen opens the same palette). Escape closes the palette; focus
// goes back to where it came from.
import { el, button } from './dom.js';

/** The reactions offered (the relay accepts any emoji; the page shows these). */
export const QUICK = ['👍', '❤️', '😂', '😮', '🎉'];
const LONG_PRESS_MS = 450;

/** Adds reacting to `entry`; `onPick(emoji)` sends one. */
export function addReactions(entry, onPick) {
  const chips = el('div', 'reacts');
  const add = button('add', '☺');
  add.setAttribute('aria-label', 'React');
  add.setAttribute('aria-expanded', 'false');
  const palette = el('div', 'palette');
  palette.hidden = true;
  palette.setAttribute('role', 'group');
  palette.setAttribute('aria-label', 'Reactions');
  let back = add;
  const close = (refocus) => {
    palette.hidden = true;
    add.setAttribute('aria-expanded', 'false');
    if (refocus) (back.isConnected && back.offsetParent !== null ? back : entry.li).focus();
  };
  const openPalette = (from) => {
    back = from;
    palette.hidden = false;
    add.setAttribute('aria-expanded', 'true');
    palette.firstElementChild.focus();
  };
  for (const e of QUICK) {
    const b = button('', e, () => {
      onPick(e);
      close(true);
    });
    b.setAttribute('aria-label', `React with ${e}`);
    palette.append(b);
  }
  palette.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') {
      ev.preventDefault();
      ev.stopPropagation();
      close(true);
    }
  });
  add.onclick = () => (palette.hidden ? openPalette(add) : close(true));
  longPress(entry.li, () => openPalette(add));
  entry.chips = chips;
  entry.li.append(add, chips, palette);
}

/** Calls `fn` when a touch stays on `node` for a moment without moving. */
function longPress(node, fn) {
  let timer = 0;
  let x = 0;
  let y = 0;
  let fired = false;
  const cancel = () => clearTimeout(timer);
  node.addEventListener('pointerdown', (ev) => {
    if (ev.pointerType !== 'touch' || ev.target.closest('button, a')) return;
    fired = false;
    x = ev.clientX;
    y = ev.clientY;
    timer = setTimeout(() => {
      fired = true;
      fn();
    }, LONG_PRESS_MS);
  });
  node.addEventListener('pointermove', (ev) => {
    if (Math.abs(ev.clientX - x) + Math.abs(ev.clientY - y) > 10) cancel();
  });
  for (const t of ['pointerup', 'pointercancel', 'pointerleave']) node.addEventListener(t, cancel);
  // A long press would otherwise also open the browser's menu.
  node.addEventListener('contextmenu', (ev) => {
    if (fired) ev.preventDefault();
  });
}

/**
 * Shows the chips of `summary` ([{emoji, count, mine}]) on `entry`; a chip
 * click calls `onToggle(emoji)`. Focus on a chip stays on it.
 */
export function renderReactions(entry, summary, onToggle) {
  const had = entry.chips.contains(document.activeElement) ? document.activeElement.dataset.emoji : null;
  entry.chips.replaceChildren();
  for (const { emoji, count, mine } of summary) {
    const b = button('chip', `${emoji} ${count}`, () => onToggle(emoji));
    b.dataset.emoji = emoji;
    b.setAttribute('aria-pressed', String(mine));
    b.setAttribute('aria-label', `${emoji} ${count} reaction${count === 1 ? '' : 's'}${mine ? ', yours included' : ''}`);
    entry.chips.append(b);
    if (emoji === had) b.focus();
  }
  // The chip that had focus is gone (its last reaction was taken back).
  if (had && !entry.chips.contains(document.activeElement)) entry.li.focus();
}
