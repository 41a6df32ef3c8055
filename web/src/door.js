// The door of a passphrase room. The room's id comes from its key (so from
// the passphrase), and a mistyped passphrase leads to another, empty room.
// To still tell that person, every page in a passphrase room also holds a
// second connection to the door: a relay room whose id comes from the room
// name alone, joined without `since` (so the relay keeps nothing there) and
// where nothing is ever said. Each page shows, as its `avatar`, the door
// check (8 bits of the room key, envelope.js doorOf) and its person tag, so
// the tabs of one browser count once. Someone at the door whose check
// differs from everyone else's typed another passphrase.
import { joinFrame } from './frames.js';
import { newUserId } from './state.js';
import { Connection } from './connection.js';
import { showWrongKey } from './view.js';

/** Members kept at the door (the relay allows 64 per room). */
const MAX_AT_DOOR = 64;

/** A door avatar: the check and the person tag. */
export const doorAvatar = (check, tag) => `${check}.${tag}`;

/**
 * What the door says about this page's passphrase, from the avatars of those
 * at the door (`avatars`: the others, not this tab): `{same, other}` people
 * (tabs of one browser once, this browser not at all) with this page's check
 * and with another.
 */
export function doorCount(avatars, check, tag) {
  const same = new Set();
  const other = new Set();
  for (const a of avatars) {
    if (typeof a !== 'string') continue;
    const [c, t = ''] = a.split('.', 2);
    if (t && t === tag) continue;
    (c === check ? same : other).add(t || a);
  }
  return { same: same.size, other: other.size };
}

/**
 * Opens the door of a room: `doorId`, this page's `check` and `tag`;
 * `onChange({same, other})` whenever who is at the door changes. Returns a
 * function that closes it.
 */
export function openDoor(url, doorId, check, tag, onChange) {
  const others = new Map(); // user id -> avatar
  let myId = newUserId();
  const changed = () => onChange(doorCount(others.values(), check, tag));
  const conn = new Connection(url, {
    onOpen: () => conn.send(joinFrame({ room: doorId, userId: myId, avatar: doorAvatar(check, tag) })),
    onState: () => {},
    onClose: () => {
      others.clear();
      changed();
    },
    onFrame: (f) => {
      if (f.type === 'userList') {
        others.clear();
        for (const u of f.users || []) if (u && u.id !== myId && others.size < MAX_AT_DOOR) others.set(u.id, u.avatar);
        conn.healthy();
      } else if (f.type === 'userJoined' && f.user && f.user.id !== myId && others.size < MAX_AT_DOOR) {
        others.set(f.user.id, f.user.avatar);
      } else if (f.type === 'userLeft') {
        others.delete(f.userId);
      } else if (f.type === 'error' && f.code === 'USER_ID_TAKEN') {
        myId = newUserId();
        conn.send(joinFrame({ room: doorId, userId: myId, avatar: doorAvatar(check, tag) }));
        return;
      } else return;
      changed();
    },
  });
  conn.start();
  return () => conn.stop();
}

/**
 * In a passphrase room, people at its door with another passphrase
 * and none with this one: the passphrase typed here is probably wrong.
 */
export function checkKey(r) {
  const { same, other } = r.door;
  if (!r.roomName || !other || same || r.othersReadable()) {
    showWrongKey('');
    return;
  }
  showWrongKey(other > 1
    ? 'Others are in a room of this name, with another passphrase and none with yours: the passphrase you typed is probably not the one the others use.'
    : 'The other person in a room of this name uses another passphrase: one of you probably mistyped it. Check yours.');
}
