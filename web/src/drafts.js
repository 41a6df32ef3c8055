// Half-typed messages, kept per room in this browser (localStorage), so that
// a reload or a closed tab does not lose them. Bounded: a few rooms, and no
// more text than a message can carry. Cleared when the message is sent.
// The same list form keeps the last message read in each room, so that a
// page that starts again shows where the new part begins.
import { store } from './dom.js';

/** Rooms whose drafts are kept; the least recently typed in go first. */
export const MAX_DRAFTS = 20;
/** Characters kept of one draft (a message can carry fewer than this). */
export const MAX_DRAFT_CHARS = 12000;
const KEY = 'whisper.drafts';
const READ_KEY = 'whisper.read';

/** The drafts in `json` (what localStorage holds): `[{r: room id, t: text}]`, newest first; [] if unreadable. */
export function parseDrafts(json) {
  try {
    const list = JSON.parse(json || '[]');
    return Array.isArray(list)
      ? list.filter((d) => d && typeof d.r === 'string' && typeof d.t === 'string').slice(0, MAX_DRAFTS)
      : [];
  } catch {
    return [];
  }
}

/** `list` with room `roomId`'s draft set to `text` (first), or removed when `text` is blank. */
export function withDraft(list, roomId, text) {
  const rest = list.filter((d) => d.r !== roomId);
  if (!String(text).trim()) return rest;
  return [{ r: roomId, t: String(text).slice(0, MAX_DRAFT_CHARS) }, ...rest].slice(0, MAX_DRAFTS);
}

/** The draft of room `roomId` in `list`, or ''. */
export const draftIn = (list, roomId) => (list.find((d) => d.r === roomId) || { t: '' }).t;

/** The draft kept for room `roomId`, or ''. */
export const loadDraft = (roomId) => draftIn(parseDrafts(store.get(KEY)), roomId);

/** Keeps `text` as room `roomId`'s draft ('' removes it). */
export function saveDraft(roomId, text) {
  const before = store.get(KEY);
  const after = JSON.stringify(withDraft(parseDrafts(before), roomId, text));
  if (after !== (before || '[]')) store.set(KEY, after);
}

/** The id of the last message read in room `roomId` in this browser, or ''. */
export const loadReadUpTo = (roomId) => draftIn(parseDrafts(store.get(READ_KEY)), roomId);

/** Remembers message `id` as the last one read in room `roomId`. */
export function saveReadUpTo(roomId, id) {
  const list = parseDrafts(store.get(READ_KEY));
  if (id && draftIn(list, roomId) !== id) store.set(READ_KEY, JSON.stringify(withDraft(list, roomId, id)));
}
