// Cues of a conversation that went on while the reader was elsewhere: the
// unread count in the title and favicon (with an optional tone or buzz),
// the unread divider, and the "new messages" button while scrolled up.
import { $ } from './dom.js';
import { showUnread, chime, buzz } from './notify.js';
import { appendToLog, atEnd, placeDivider, showJump } from './log.js';
import { saveReadUpTo } from './drafts.js';

/** The page's title without an unread count. */
export const TITLE = 'Whisper';

/** Whether the reader is elsewhere: another tab, another window. */
const away = () => !(document.visibilityState === 'visible' && document.hasFocus());

/** Shows `node`, a message from someone else in room `r`, with the cues for one not yet seen. */
export function showIncoming(r, node) {
  const gone = away();
  const followed = appendToLog(node);
  if (!gone && followed) seen(r);
  if (gone || !followed) {
    if (!r.unseen) placeDivider(node);
    r.unseen++;
    if (!followed) showJump(r.unseen);
  }
  if (!gone) return;
  r.unread++;
  showUnread(r.unread, TITLE);
  if ($('opt-sound').checked) chime();
  if ($('opt-vibrate').checked) buzz();
}

/**
 * The reader may be back: the tab came into view or got focus, or (with
 * `scrolled`) the log scrolled, which counts only while the tab has focus.
 */
export function seen(r, scrolled = false) {
  if (!r) return;
  if (r.unread && document.visibilityState === 'visible' && !(scrolled && away())) {
    r.unread = 0;
    showUnread(0, TITLE);
  }
  if (!away() && atEnd()) {
    r.unseen = 0;
    showJump(0);
    if (r.lastShownId) saveReadUpTo(r.roomId, r.lastShownId);
  }
}

/** Clears every cue (the room was left). */
export function clearCues() {
  showUnread(0, TITLE);
  showJump(0);
}
