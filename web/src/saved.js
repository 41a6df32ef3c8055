// The rooms a person has been in, remembered in this browser only
// (localStorage): the room key (or, for a passphrase room, the key derived
// from it and the room name) and its label, so that "Leave" can be undone
// and a room rejoined after a reload. Nothing of it leaves the browser.
import { store } from './dom.js';

/** Rooms remembered at most; the least recently used go first. */
export const MAX_SAVED = 20;
const KEY = 'whisper.rooms';

const valid = (e) => e && typeof e.k === 'string' && typeof e.r === 'string' && typeof e.l === 'string';
const same = (a, b) => a.k === b.k && a.r === b.r;

/** The list in `json` (what localStorage holds), most recent first; [] for anything unreadable. */
export function parseSaved(json) {
  try {
    const list = JSON.parse(json || '[]');
    return Array.isArray(list) ? list.filter(valid).slice(0, MAX_SAVED) : [];
  } catch {
    return [];
  }
}

/** `list` with `room` ({k, r, l, n}) first, replacing its older entry, at most MAX_SAVED long. */
export function withRoom(list, room, now = Date.now()) {
  const entry = { k: room.k, r: room.r, l: room.l, n: typeof room.n === 'string' ? room.n : '', t: now };
  return [entry, ...list.filter((e) => !same(e, room))].slice(0, MAX_SAVED);
}

/** `list` without `room`. */
export const withoutRoom = (list, room) => list.filter((e) => !same(e, room));

/** The rooms remembered in this browser, most recent first. */
export const savedRooms = () => parseSaved(store.get(KEY));

/** Remembers `room` ({k: encoded key, r: passphrase room name or '', l: label, n: its creator's name for it or ''}). */
export function rememberRoom(room) {
  store.set(KEY, JSON.stringify(withRoom(savedRooms(), room)));
}

/** Forgets `room` (its key leaves this browser). */
export function forgetRoom(room) {
  store.set(KEY, JSON.stringify(withoutRoom(savedRooms(), room)));
}

/** Updates the label and name of `room` if it is remembered, keeping its place. */
export function relabelRoom(room) {
  const list = savedRooms();
  const e = list.find((x) => same(x, room));
  if (e && (e.l !== room.l || e.n !== room.n)) {
    e.l = room.l;
    e.n = room.n;
    store.set(KEY, JSON.stringify(list));
  }
}
