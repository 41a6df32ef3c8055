// The invite fragment with a check, so that a link with a character changed,
// added or removed says it is damaged instead of opening another, empty room.
//
// Form: base64url(key ‖ CRC-16(key)), exactly 46 characters (34 bytes; the
// last character carries 2 data bits and 4 zero bits, and the decoder
// accepts only that one spelling). The CRC is CRC-16/CCITT-FALSE (generator
// x^16 + x^12 + x^5 + 1, initial value 0xFFFF, most significant bit first),
// appended big-endian, so the 272 data bits in base64's own bit order are
// one codeword of a shortened cyclic code. Why every single edit is caught:
// - Inserting or removing a character changes the length (45 or 47), and only
//   46 (or 43, the old form below) is accepted.
// - Changing one character changes at most 6 adjacent bits of the bit string.
//   If any of them lands in the 4 trailing bits, the spelling is no longer the
//   one accepted. Otherwise the change is a burst e(x) = x^i b(x) with
//   1 <= deg b < 6 and b(0) = 1. A cyclic code with a degree-16 generator
//   g(x) that has a constant term detects every burst shorter than 17 bits:
//   g cannot divide x^i, and cannot divide b(x) of lower degree. (The initial
//   value only adds a constant for a fixed length, so differences between
//   accepted strings are still codewords.) Two swapped neighbours are a
//   burst of at most 12 bits, so they are caught too.
// - A random change (any number of characters) passes only if the bit error
//   happens to be a multiple of g(x), about 1 in 2^16, and also keeps the
//   4 trailing bits zero (1 in 16): 2^-20 in all.
// A truncated hash would catch a single change only with probability
// 1 - 2^-16; the CRC catches all of them, which web/test/invitecode.test.js
// checks exhaustively on sample invites.
//
// Older invites are the bare key (43 characters). They are still accepted,
// with a warning: rooms made before the check was added have links that
// people have already shared, and refusing them would strand those rooms.
// The page says the link has no check, so a member who lands in an empty
// room knows to ask for a new link.
import { toB64u, fromB64u } from './codec.js';

const KEY_BYTES = 32;
/** Characters of an invite fragment with its check. */
export const INVITE_LENGTH = 46;
/** Characters of an older invite fragment (the bare key). */
export const LEGACY_LENGTH = 43;

/** CRC-16/CCITT-FALSE of `bytes`. */
export function crc16(bytes) {
  let crc = 0xffff;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let i = 0; i < 8; i++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

/** The invite fragment (46 characters) of room key `key`. */
export function encodeInvite(key) {
  if (!(key instanceof Uint8Array) || key.length !== KEY_BYTES) throw new TypeError('room key must be 32 bytes');
  const crc = crc16(key);
  const out = new Uint8Array(KEY_BYTES + 2);
  out.set(key);
  out[KEY_BYTES] = crc >> 8;
  out[KEY_BYTES + 1] = crc & 0xff;
  return toB64u(out);
}

/**
 * Reads an invite fragment: `{key, legacy}` (`legacy` for the older form
 * without a check), or null when it is damaged. Nothing is trimmed or
 * repaired: any change must fail here.
 */
export function decodeInvite(fragment) {
  if (typeof fragment !== 'string') return null;
  if (fragment.length === LEGACY_LENGTH) {
    const key = fromB64u(fragment);
    return key && key.length === KEY_BYTES ? { key, legacy: true } : null;
  }
  if (fragment.length !== INVITE_LENGTH) return null;
  const bytes = fromB64u(fragment);
  if (!bytes || bytes.length !== KEY_BYTES + 2) return null;
  const key = bytes.slice(0, KEY_BYTES);
  const crc = (bytes[KEY_BYTES] << 8) | bytes[KEY_BYTES + 1];
  return crc === crc16(key) ? { key, legacy: false } : null;
}
