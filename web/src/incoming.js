// What the relay sends into a room, live or replayed by a catch-up
// (PROTOCOL.md section 7): messages, each shown once (by id); reactions, set
// or taken back per person, so that one applied twice changes nothing; and
// the typing line. room.js routes the frames here.
import { open } from './envelope.js';
import { cut, reactionOp } from './state.js';
import { seen, showIncoming } from './cues.js';
import {
  appendToLog, markSent, messageEntry, placeDivider, scrollToEnd, setTime, undecryptableEntry,
} from './log.js';
import { QUICK, addReactions, renderReactions } from './reactions.js';
import { renderTyping, showDropped } from './view.js';
import { sendReaction } from './compose.js';

const TYPING_SHOWN_MS = 6000;

/** The sealed profile in `avatar`: `{name, tag, title}`; `name` null when it does not open (another key). */
export function readProfile(r, avatar) {
  const opened = open(r.messageKey, 'profile', avatar);
  const v = opened.ok && opened.value && typeof opened.value === 'object' ? opened.value : {};
  return {
    name: typeof v.n === 'string' ? cut(v.n) : null,
    tag: typeof v.p === 'string' ? v.p : '',
    title: typeof v.r === 'string' ? cut(v.r) : '',
  };
}

/**
 * Who sent a frame (its `user`): `{known, tag, me}`. A member present is
 * known from its join; someone who has left since (a catch-up replays what
 * they said) from the profile the frame carries.
 */
function author(r, user) {
  if (!user || typeof user.id !== 'string') return { known: false, tag: '', me: false };
  const m = r.members.get(user.id);
  const p = m ? { name: m.name, tag: m.tag } : readProfile(r, user.avatar);
  return { known: !!p.name, tag: p.tag, me: user.id === r.myId || (!!p.tag && p.tag === r.myTag) };
}

/**
 * Puts a message from the room in the log: with the unread cues, except in
 * the replay of an empty screen, where the divider goes before the first
 * message from others after the last one read in this browser.
 */
function place(r, node, cues) {
  if (r.replaying && !r.replayFirst) r.replayFirst = node;
  if (cues && !(r.replaying && r.quietReplay)) {
    showIncoming(r, node);
    return;
  }
  if (appendToLog(node)) scrollToEnd();
  if (cues && r.readUpTo === null && !r.newMarked) {
    placeDivider(node);
    r.newMarked = true;
  }
  seen(r);
}

/** One `message` frame, shown once: an id already seen is skipped (a catch-up overlapping the screen). */
export function onMessage(r, f) {
  if (typeof f.id === 'string' && r.seenIds.has(f.id)) return;
  show(r, f);
  // What follows the last message read in this browser is new to the reader.
  if (f.id === r.readUpTo) r.readUpTo = null;
}

function show(r, f) {
  if (f.user && f.user.id === r.myId) {
    const req = r.takeEcho(f.content);
    if (req) {
      setTime(req.entry, f.timestamp);
      markSent(req.entry);
      attachReactions(r, req.entry, f.id);
      return;
    }
  }
  const who = author(r, f.user);
  const opened = open(r.messageKey, 'msg', f.content);
  if (!opened.ok || typeof opened.value.t !== 'string') {
    if (typeof f.id === 'string') r.seen(f.id);
    // The sender holds our key (its profile opened), so this was altered on the way.
    if (who.known) showDropped(++r.dropped);
    else place(r, undecryptableEntry(f.timestamp).li, true);
    return;
  }
  const name = typeof opened.value.n === 'string' ? cut(opened.value.n) : 'someone';
  if (who.me) {
    // One's own: said in another tab of this browser, or before a reload (a catch-up shows it again).
    const entry = messageEntry(name, opened.value.t, true, r.replaying ? '✓ sent' : '✓ from your other tab');
    entry.mark.classList.add('delivered');
    setTime(entry, f.timestamp);
    attachReactions(r, entry, f.id);
    place(r, entry.li, false);
    return;
  }
  const entry = messageEntry(name, opened.value.t, false);
  setTime(entry, f.timestamp);
  attachReactions(r, entry, f.id);
  place(r, entry.li, true);
  if (f.user) setTyping(r, f.user.id, false);
}

function attachReactions(r, entry, id) {
  if (typeof id !== 'string' || entry.id) return;
  entry.id = id;
  r.remember(id, entry);
  addReactions(entry, (emoji) => sendReaction(r, id, emoji));
}

/** One `reaction` frame: given or taken back by its sender's person (all tabs of a browser are one). */
export function onReaction(r, f) {
  // A replayed reaction of this tab's is no answer to a reaction sent now.
  if (f.user && f.user.id === r.myId && !r.replaying) r.takeReactionEcho();
  const { emoji, on } = reactionOp(f.emoji);
  const entry = r.messages.get(f.messageId);
  if (!entry || !f.user || !QUICK.includes(emoji)) return;
  r.setReaction(f.messageId, emoji, r.personOf(f.user.id, author(r, f.user).tag), on);
  renderReactions(entry, r.reactionSummary(f.messageId), (e) => sendReaction(r, entry.id, e));
}

/** Shows or ends member `id`'s typing line entry. */
export function setTyping(r, id, on) {
  clearTimeout(r.typers.get(id));
  if (on) r.typers.set(id, setTimeout(() => setTyping(r, id, false), TYPING_SHOWN_MS));
  else r.typers.delete(id);
  renderTyping([...r.typers.keys()].map((i) => r.memberName(i) || 'someone'));
}
