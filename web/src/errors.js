// Every error code and close code of the wire contract as a sentence a person understands.

const SENTENCES = {
  INVALID_JSON: 'The hub could not read what this page sent. Reload the page.',
  INVALID_MESSAGE: 'The hub did not understand a request from this page. Reload the page.',
  INVALID_ROOM_ID: 'That room address is not valid. Ask for a new invite link.',
  INVALID_USER_ID: 'This page picked an identity the hub refuses. Reload the page.',
  INVALID_USERNAME: 'The hub refused the handle this page uses. Reload the page.',
  INVALID_AVATAR: 'Your name is too long once encrypted. Choose a shorter name.',
  INVALID_CONTENT: 'That message could not be sent in the form the hub accepts.',
  INVALID_EMOJI: 'That reaction is not accepted by the hub.',
  USER_ID_TAKEN: 'This identity is already in the room (another tab?); joining again with a new one.',
  ROOM_FULL: 'This room is full. Try again when someone leaves.',
  TOO_MANY_ROOMS: 'The hub has no room for another conversation right now. Try again later.',
  NOT_IN_ROOM: 'You are not in the room yet. Wait until the page has reconnected.',
  MESSAGE_TOO_LARGE: 'That message is too long for the hub. Shorten it and send again.',
  IP_BLOCKED: 'The hub has blocked this device for a while after too many bad requests.',
  TOO_MANY_CONNECTIONS: 'This device has too many chats open on the hub. Close some tabs.',
  SERVER_FULL: 'The hub is full right now. The page will keep trying.',
  ORIGIN_NOT_ALLOWED: 'The hub does not accept chat from this address.',
};

/** The sentence for error frame `frame` ({code, message}). */
export function errorSentence(frame) {
  if (frame.code === 'RATE_LIMITED') {
    return `Slow down; you can send again in ${retrySeconds(frame.message)} s.`;
  }
  return SENTENCES[frame.code] || `The hub reported a problem (${String(frame.code).slice(0, 40)}).`;
}

/** Seconds to wait after RATE_LIMITED: the number in the hub's message, else 2. */
export function retrySeconds(message) {
  const m = /(\d+(?:\.\d+)?)\s*(ms|s)\b/.exec(String(message || ''));
  if (!m) return 2;
  const secs = m[2] === 'ms' ? Number(m[1]) / 1000 : Number(m[1]);
  return Math.max(1, Math.ceil(secs));
}

const CLOSES = {
  1001: 'The hub is restarting.',
  1008: 'The hub closed the connection after too many requests from this device.',
  1009: 'The last message was too large for the hub.',
  1013: 'This device could not keep up with the room.',
};

/** A sentence for a WebSocket close code, or '' for an ordinary drop. */
export const closeSentence = (code) => CLOSES[code] || '';
