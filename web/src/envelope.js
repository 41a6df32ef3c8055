// Keys, room ids and the message envelope: everything the page encrypts.
//
// Key schedule (all versions are "v1"; salt = "rtce2ee-whisper/v1"):
//   room key K       32 random bytes (invite link) or scrypt(passphrase, room name)
//   room id          base64url(HKDF-SHA256(K, salt, "room id", 12 bytes)): 16 characters,
//                    the only room name the relay ever sees, for passphrase rooms too
//   message key      HKDF-SHA256(K, salt, "message key", 32 bytes)
// A passphrase room also has a door (door.js), where a wrong passphrase shows:
//   door id          base64url(HKDF-SHA256(normalised room name, salt, "room name id", 12 bytes))
//   door check       base64url(HKDF-SHA256(K, salt, "door check", 1 byte)): 8 bits of K
// Sealed content:    base64url(nonce) "." base64url(XChaCha20-Poly1305(message key,
//                    nonce, JSON, aad = "rtce2ee-whisper/v1/" + kind)), nonce 24 random bytes.
// The kind in the associated data keeps a sealed profile from being replayed as a
// chat message and the other way round.

import { xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { scrypt, scryptAsync } from '@noble/hashes/scrypt.js';
import { toB64u, fromB64u, b64uLength, utf8, fromUtf8 } from './codec.js';
import { messageFrameLength } from './frames.js';

export const VERSION = 'rtce2ee-whisper/v1';
export const KEY_BYTES = 32;
export const NONCE_BYTES = 24;
export const TAG_BYTES = 16;
/** scrypt cost for passphrase rooms: 32 MiB of memory, about 0.1 s on a laptop, 0.6 s on a phone. */
export const SCRYPT_PARAMS = Object.freeze({ N: 2 ** 15, r: 8, p: 1, dkLen: KEY_BYTES });

const SALT = utf8(VERSION);

/** A fresh random room key. */
export function newRoomKey() {
  return crypto.getRandomValues(new Uint8Array(KEY_BYTES));
}

/** The key as it travels in an invite link's fragment (43 characters). */
export const encodeKey = (key) => toB64u(key);

/** The key from an invite fragment, or `null`. */
export function decodeKey(text) {
  const key = fromB64u(String(text).trim());
  return key && key.length === KEY_BYTES ? key : null;
}

/**
 * The room id and the message key for room key `key`. The id comes from the
 * key alone, for a passphrase room too: whoever knows only the room's name
 * cannot find the room, nor fetch the ciphertext the hub keeps for catch-up
 * (PROTOCOL.md section 7) to test guessed passphrases against.
 */
export function deriveRoom(key) {
  if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) throw new TypeError('room key must be 32 bytes');
  return {
    roomId: toB64u(hkdf(sha256, key, SALT, utf8('room id'), 12)),
    messageKey: hkdf(sha256, key, SALT, utf8('message key'), KEY_BYTES),
  };
}

/**
 * The door of a passphrase room: `{doorId, check}`. Everyone who typed the
 * same room name meets at the door id (a room of the relay's where nothing
 * is said and nothing is kept) and shows the check: 8 bits of the room key,
 * so that a different check tells a mistyped passphrase (255 times in 256)
 * while giving a guesser of passphrases almost nothing to test against.
 */
export function doorOf(roomName, key) {
  const name = normalizeRoomName(roomName);
  if (!name) throw new TypeError('room name is empty');
  return {
    doorId: toB64u(hkdf(sha256, utf8(name), SALT, utf8('room name id'), 12)),
    check: toB64u(hkdf(sha256, key, SALT, utf8('door check'), 1)),
  };
}

/** How a room name is compared: Unicode NFKC, trimmed, inner spaces collapsed, lower case. */
export function normalizeRoomName(name) {
  return String(name).normalize('NFKC').trim().replace(/\s+/g, ' ').toLowerCase();
}

function scryptInputs(roomName, passphrase) {
  const room = normalizeRoomName(roomName);
  if (!room) throw new TypeError('room name is empty');
  if (!passphrase) throw new TypeError('passphrase is empty');
  return [utf8(String(passphrase).normalize('NFKC')), utf8(`${VERSION}/room/${room}`)];
}

/** The room key of a room name + passphrase (synchronous; for a Worker). */
export function passphraseKey(roomName, passphrase, params = SCRYPT_PARAMS) {
  const [pw, salt] = scryptInputs(roomName, passphrase);
  return scrypt(pw, salt, params);
}

/** The same, yielding to the event loop while it works. */
export function passphraseKeyAsync(roomName, passphrase, params = SCRYPT_PARAMS) {
  const [pw, salt] = scryptInputs(roomName, passphrase);
  return scryptAsync(pw, salt, { ...params, asyncTick: 20 });
}

const aad = (kind) => utf8(`${VERSION}/${kind}`);

/**
 * Seals `value` (any JSON value) as relay content. `nonce` is for tests only:
 * a nonce must never repeat under one key, so callers leave it random.
 */
export function seal(messageKey, kind, value, nonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES))) {
  const plain = utf8(JSON.stringify(value));
  const sealed = xchacha20poly1305(messageKey, nonce, aad(kind)).encrypt(plain);
  return `${toB64u(nonce)}.${toB64u(sealed)}`;
}

/**
 * Opens sealed content. `{ ok: true, value }`, or `{ ok: false, reason }` with
 * reason "malformed" (not our format) or "auth" (another key, or tampered).
 */
export function open(messageKey, kind, content) {
  if (typeof content !== 'string') return { ok: false, reason: 'malformed' };
  const parts = content.split('.');
  if (parts.length !== 2) return { ok: false, reason: 'malformed' };
  const nonce = fromB64u(parts[0]);
  const sealed = fromB64u(parts[1]);
  if (!nonce || nonce.length !== NONCE_BYTES || !sealed || sealed.length < TAG_BYTES) {
    return { ok: false, reason: 'malformed' };
  }
  let plain;
  try {
    plain = xchacha20poly1305(messageKey, nonce, aad(kind)).decrypt(sealed);
  } catch {
    return { ok: false, reason: 'auth' };
  }
  try {
    return { ok: true, value: JSON.parse(fromUtf8(plain)) };
  } catch {
    // Authentic but not JSON: only a buggy or hostile key holder sends that.
    return { ok: false, reason: 'malformed' };
  }
}

/** Length of the sealed content for a JSON value whose text is `jsonBytes` long. */
export const sealedLength = (jsonBytes) => b64uLength(NONCE_BYTES) + 1 + b64uLength(jsonBytes + TAG_BYTES);

/** A chat message's plaintext: the text and the sender's display name. */
export const chatEnvelope = (text, name) => ({ t: text, n: name });


/** Bytes of the frame that would carry chat text `text` from `name`. */
export function chatFrameLength(text, name) {
  return messageFrameLength(sealedLength(utf8(JSON.stringify(chatEnvelope(text, name))).length));
}

/**
 * This browser's tag in room `roomId`: the same for every tab of this browser
 * in that room (so its tabs show as one person), unlinkable across rooms.
 * `secret` is this browser's random bytes (kept in localStorage).
 */
export const personTag = (secret, roomId) => toB64u(hkdf(sha256, secret, SALT, utf8(`person/${roomId}`), 9));
