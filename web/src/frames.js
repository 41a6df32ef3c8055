// Every frame this page sends to the relay is built here, and nowhere else:
// the shapes of PROTOCOL.md section 2. The builders check what the contract
// checks, so a wrong frame fails in the page (and in web/test/frames.test.js)
// rather than costing a strike at the relay.

/** The name the relay sees for everyone: display names travel sealed in `avatar`. */
export const HANDLE = 'member';

/** The contract's id rule (room ids, user ids, message ids). */
export const ID_RULE = /^[A-Za-z0-9_-]{1,64}$/;

/** Whether `text` may be a room, user or message id. */
export const isId = (text) => typeof text === 'string' && ID_RULE.test(text);

const utf8Length = (text) => new TextEncoder().encode(text).length;

function need(ok, what) {
  if (!ok) throw new TypeError(`bad ${what}`);
}

/**
 * `join` for room id `room` as user `userId`, with the sealed profile in
 * `avatar`. `since` (catch-up, PROTOCOL.md section 7) is left out unless
 * given: `''` for everything retained, or the last message id shown.
 */
export function joinFrame({ room, userId, avatar = null, since }) {
  need(isId(room), 'room id');
  need(isId(userId), 'user id');
  need(avatar === null || (typeof avatar === 'string' && avatar.length <= 512), 'avatar');
  const data = { room, user: { id: userId, name: HANDLE, avatar } };
  if (since !== undefined) {
    need(since === '' || isId(since), 'since');
    data.since = since;
  }
  return { type: 'join', data };
}

/** `leave`: the room's members see this user leave at once. */
export const leaveFrame = () => ({ type: 'leave' });

/** `ping`: the relay answers `pong` (the page's own dead-link check). */
export const pingFrame = () => ({ type: 'ping' });

/** `message` carrying sealed `content`. */
export function messageFrame(content) {
  need(typeof content === 'string' && /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,7}$/.test(content), 'content');
  return { type: 'message', data: { content } };
}

/** `typing` on or off. */
export const typingFrame = (isTyping) => ({ type: 'typing', data: { isTyping: !!isTyping } });

/** `reaction` with `emoji` to message `messageId`. */
export function reactionFrame(messageId, emoji) {
  need(isId(messageId), 'message id');
  need(typeof emoji === 'string' && emoji.length > 0 && utf8Length(emoji) <= 32 && !/[\s\p{Cc}]/u.test(emoji), 'emoji');
  return { type: 'reaction', data: { messageId, emoji } };
}

/** The frame's bytes as they go on the wire. */
export const encodeFrame = (frame) => JSON.stringify(frame);

const EMPTY_MESSAGE_BYTES = utf8Length(encodeFrame({ type: 'message', data: { content: '' } }));

/** Bytes of the `message` frame that carries content of `contentLength` characters (base64url, never escaped). */
export const messageFrameLength = (contentLength) => EMPTY_MESSAGE_BYTES + contentLength;

/**
 * Error codes that answer a budgeted request (message or reaction): replies keep
 * the order of requests, so such an error belongs to the oldest one still open.
 */
export const REQUEST_ERRORS = new Set([
  'RATE_LIMITED', 'INVALID_CONTENT', 'INVALID_EMOJI', 'MESSAGE_TOO_LARGE', 'NOT_IN_ROOM', 'INVALID_MESSAGE',
]);
