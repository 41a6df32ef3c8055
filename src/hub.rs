//! Step 4 of a message's path: membership. Which connection is in which room
//! under which identity, the room index (rooms by dialect and name), and the
//! capacity rules of `join`.
//!
//! No I/O and no frame bytes: what the members of a room are sent, and when,
//! is the business of [`crate::outbound`], which keeps one log per room under
//! the same [`RoomId`].

use std::collections::HashMap;
use std::num::NonZeroU32;

use crate::config::Config;
use crate::conns::ConnId;
use crate::protocol::{Dialect, ErrorCode, JoinRequest};

/// Identity of a room: the index of its slot in the hub (stored plus one, so
/// that an `Option<RoomId>` takes no more room than a `RoomId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RoomId(NonZeroU32);

impl RoomId {
    /// The room in slot `index`.
    #[inline]
    pub fn from_index(index: usize) -> RoomId {
        RoomId(NonZeroU32::new(index as u32 + 1).expect("room index below u32::MAX"))
    }

    /// The index of its slot, also used by the room logs.
    #[inline]
    pub fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

/// A room name, as the index keys it.
type Name = heapless::String<64>;

struct Room {
    name: Name,
    /// Every member speaks it; rooms of the two dialects never mix.
    dialect: Dialect,
    /// Members in join order; grown on demand (at most `MAX_ROOM_USERS`,
    /// which `join` checks), shrunk as members leave.
    members: Vec<ConnId>,
}

/// Where a connection sits: its room and the identity it joined with, the
/// member's JSON and its id in one allocation.
struct Seat {
    /// The member in its room's dialect ([`JoinRequest::user_json`]),
    /// embedded verbatim in frames, followed by the user id.
    text: Box<str>,
    room: RoomId,
    /// Bytes of the user id at the end of `text` (at most 64).
    id_len: u8,
}

impl Seat {
    fn new(room: RoomId, user_id: &str, json: Box<str>) -> Seat {
        let mut text = String::from(json);
        text.reserve_exact(user_id.len());
        text.push_str(user_id);
        Seat {
            text: text.into_boxed_str(),
            room,
            id_len: user_id.len() as u8,
        }
    }

    /// The member as frames embed it.
    fn json(&self) -> &str {
        &self.text[..self.text.len() - usize::from(self.id_len)]
    }

    /// The id it joined with.
    fn user_id(&self) -> &str {
        &self.text[self.text.len() - usize::from(self.id_len)..]
    }
}

/// Bytes of one member's slot in the seat table (its JSON and id are one
/// allocation of their own).
pub const MEMBER_RECORD_BYTES: usize = std::mem::size_of::<Option<Seat>>();
/// Bytes of one room's record in the room table.
pub const ROOM_RECORD_BYTES: usize = std::mem::size_of::<Option<Room>>();

/// A `join` that passed the capacity rules ([`Hub::check_join`]).
pub struct Admission {
    key: (Dialect, Name),
    user_id: Name,
}

/// The sender of a room frame, as the outbound side needs it.
pub struct Speaker<'a> {
    /// The sending connection.
    pub id: ConnId,
    /// Its room.
    pub room: RoomId,
    /// The room's dialect.
    pub dialect: Dialect,
    /// The id it joined with.
    pub user_id: &'a str,
    /// Its identity as embedded in frames.
    pub json: &'a str,
    /// Every member of the room, the sender included, in join order.
    pub members: &'a [ConnId],
}

/// What [`Hub::remove`] did.
pub struct Departure {
    /// The room that was left.
    pub room: RoomId,
    /// The room's dialect.
    pub dialect: Dialect,
    /// The id the member had joined with.
    pub user_id: Name,
    /// The member was the last: the room is gone.
    pub emptied: bool,
}

/// Rooms and their members. See the module documentation.
pub struct Hub {
    rooms: Vec<Option<Room>>,
    free_rooms: Vec<RoomId>,
    /// Rooms by dialect and name: the dialects are separate namespaces.
    index: HashMap<(Dialect, Name), RoomId>,
    /// By connection: where it sits, if in a room.
    seats: Vec<Option<Seat>>,
    users_in_rooms: u32,
    max_rooms: u32,
    max_room_users: u32,
}

impl Hub {
    /// An empty hub with the configured room limits.
    pub fn new(cfg: &Config) -> Hub {
        Hub {
            rooms: Vec::new(),
            free_rooms: Vec::new(),
            index: HashMap::new(),
            // Reserved, not touched: untouched capacity costs no resident memory.
            seats: Vec::with_capacity(cfg.max_connections as usize),
            users_in_rooms: 0,
            max_rooms: cfg.max_rooms,
            max_room_users: cfg.max_room_users,
        }
    }

    /// Rooms with at least one member.
    pub fn active_rooms(&self) -> usize {
        self.index.len()
    }

    /// Connections in a room.
    pub fn users_in_rooms(&self) -> u32 {
        self.users_in_rooms
    }

    #[inline]
    fn seat(&self, id: ConnId) -> Option<&Seat> {
        self.seats.get(id.index())?.as_ref()
    }

    /// The room `id` is in.
    #[inline]
    pub fn room_of(&self, id: ConnId) -> Option<RoomId> {
        self.seat(id).map(|s| s.room)
    }

    /// Whether `id` is in a room.
    #[inline]
    pub fn in_room(&self, id: ConnId) -> bool {
        self.seat(id).is_some()
    }

    #[inline]
    fn room(&self, r: RoomId) -> &Room {
        self.rooms[r.index()].as_ref().expect("live room id")
    }

    /// The members of room `r` in join order (none for a room that is gone).
    #[inline]
    pub fn members(&self, r: RoomId) -> &[ConnId] {
        match self.rooms.get(r.index()) {
            Some(Some(room)) => &room.members,
            _ => &[],
        }
    }

    /// `id` as the sender of a room frame; `None` outside a room.
    pub fn speaker(&self, id: ConnId) -> Option<Speaker<'_>> {
        let seat = self.seat(id)?;
        let room = self.room(seat.room);
        Some(Speaker {
            id,
            room: seat.room,
            dialect: room.dialect,
            user_id: seat.user_id(),
            json: seat.json(),
            members: &room.members,
        })
    }

    /// Checks `join` in the contract's order: the room's name, then the
    /// user id's uniqueness and the room's capacity (or, for a new room, the
    /// number of rooms, counting the one `id` may leave), then the user id.
    pub fn check_join(
        &self,
        id: ConnId,
        dialect: Dialect,
        req: &JoinRequest,
    ) -> Result<Admission, ErrorCode> {
        let name = Name::try_from(req.room.as_str()).map_err(|_| ErrorCode::InvalidRoomId)?;
        let key = (dialect, name);
        if let Some(&r) = self.index.get(&key) {
            let room = self.room(r);
            let taken = room
                .members
                .iter()
                .any(|&m| m != id && self.seat(m).is_some_and(|s| s.user_id() == req.user_id));
            if taken {
                return Err(ErrorCode::UserIdTaken);
            }
            let others = room.members.iter().filter(|&&m| m != id).count();
            if others >= self.max_room_users as usize {
                return Err(ErrorCode::RoomFull);
            }
        } else {
            // Leaving a room of one frees its slot for the new room.
            let freed = self
                .room_of(id)
                .is_some_and(|r| self.room(r).members.len() == 1);
            let rooms_after_leave = self.index.len() - usize::from(freed);
            if rooms_after_leave >= self.max_rooms as usize {
                return Err(ErrorCode::TooManyRooms);
            }
        }
        let user_id = Name::try_from(req.user_id.as_str()).map_err(|_| ErrorCode::InvalidUserId)?;
        Ok(Admission { key, user_id })
    }

    /// The room `admission` is for, created if it does not exist (any more:
    /// the joiner may just have left it).
    pub fn open_room(&mut self, admission: &Admission) -> RoomId {
        if let Some(&r) = self.index.get(&admission.key) {
            return r;
        }
        let room = Room {
            name: admission.key.1.clone(),
            dialect: admission.key.0,
            members: Vec::new(),
        };
        let r = match self.free_rooms.pop() {
            Some(r) => {
                self.rooms[r.index()] = Some(room);
                r
            }
            None => {
                self.rooms.push(Some(room));
                RoomId::from_index(self.rooms.len() - 1)
            }
        };
        self.index.insert(admission.key.clone(), r);
        r
    }

    /// Seats `id`, in no room now, in room `r` (from [`open_room`](Self::open_room)).
    pub fn seat_member(&mut self, id: ConnId, r: RoomId, admission: Admission, json: Box<str>) {
        let room = self.rooms[r.index()].as_mut().expect("live room id");
        room.members.push(id);
        if self.seats.len() <= id.index() {
            self.seats.resize_with(id.index() + 1, || None);
        }
        self.seats[id.index()] = Some(Seat::new(r, &admission.user_id, json));
        self.users_in_rooms += 1;
    }

    /// The identities of room `r`'s members in join order, as frames embed
    /// them; `joiner` is left out unless `with_joiner`.
    pub fn member_list(
        &self,
        r: RoomId,
        joiner: ConnId,
        with_joiner: bool,
    ) -> impl Iterator<Item = &str> {
        self.room(r)
            .members
            .iter()
            .filter(move |&&m| m != joiner || with_joiner)
            .filter_map(|&m| self.seat(m))
            .map(Seat::json)
    }

    /// Takes `id` out of its room; the room goes when it empties.
    pub fn remove(&mut self, id: ConnId) -> Option<Departure> {
        let seat = self.seats.get_mut(id.index())?.take()?;
        let r = seat.room;
        let room = self.rooms[r.index()].as_mut().expect("room of a member");
        if let Some(pos) = room.members.iter().position(|&m| m == id) {
            room.members.remove(pos);
        }
        // Give back what a crowd that left had grown.
        if room.members.capacity() > 8 && room.members.len() * 4 <= room.members.capacity() {
            room.members.shrink_to(room.members.len() * 2);
        }
        self.users_in_rooms -= 1;
        let dialect = room.dialect;
        let emptied = room.members.is_empty();
        if emptied {
            let room = self.rooms[r.index()].take().expect("room");
            self.index.remove(&(room.dialect, room.name));
            self.free_rooms.push(r);
        }
        Some(Departure {
            room: r,
            dialect,
            user_id: Name::try_from(seat.user_id()).expect("a user id fits its name type"),
            emptied,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Source;
    use crate::protocol::parse_join;

    fn hub(env: &[(&str, &str)]) -> Hub {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Hub::new(&Config::load(&Source::from_maps(env, HashMap::new())).unwrap())
    }

    /// A v2 `join` as the relay makes it: checked, out of the current room,
    /// into the new one.
    fn join(h: &mut Hub, id: ConnId, room: &str, user: &str) -> Result<RoomId, ErrorCode> {
        let raw = format!(r#"{{"room":"{room}","user":{{"id":"{user}","name":"{user}"}}}}"#);
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(&raw).unwrap();
        let req = parse_join(Some(&raw)).unwrap();
        let admission = h.check_join(id, Dialect::V2, &req)?;
        h.remove(id);
        let r = h.open_room(&admission);
        h.seat_member(id, r, admission, req.user_json.into_boxed_str());
        Ok(r)
    }

    #[test]
    fn member_arrays_grow_on_demand_and_shrink_as_members_leave() {
        let mut h = hub(&[("MAX_ROOM_USERS", "200")]);
        let ids: Vec<_> = (0..200).map(ConnId::from_index).collect();
        let r = join(&mut h, ids[0], "r", "u0").unwrap();
        let capacity = |h: &Hub| h.rooms[r.index()].as_ref().unwrap().members.capacity();
        assert!(capacity(&h) <= 4, "{}", capacity(&h));
        for (i, &id) in ids.iter().enumerate().skip(1) {
            join(&mut h, id, "r", &format!("u{i}")).unwrap();
        }
        assert_eq!(h.members(r), &ids[..]);
        for &id in &ids[3..] {
            h.remove(id);
        }
        assert_eq!(h.members(r), &ids[..3]);
        assert!(capacity(&h) <= 16, "{}", capacity(&h));
        // Each member's id and JSON come back from their one allocation.
        let list: Vec<&str> = h.member_list(r, ids[0], true).collect();
        assert_eq!(list[2], r#"{"id":"u2","name":"u2","avatar":null}"#);
        assert_eq!(h.speaker(ids[1]).unwrap().user_id, "u1");
        assert_eq!(
            h.speaker(ids[1]).unwrap().json,
            r#"{"id":"u1","name":"u1","avatar":null}"#
        );
    }

    #[test]
    fn room_and_server_capacity() {
        let mut h = hub(&[("MAX_ROOM_USERS", "2"), ("MAX_ROOMS", "1")]);
        let ids: Vec<_> = (0..3).map(ConnId::from_index).collect();
        let r = join(&mut h, ids[0], "r", "u0").unwrap();
        assert_eq!(join(&mut h, ids[2], "r", "u0"), Err(ErrorCode::UserIdTaken));
        join(&mut h, ids[1], "r", "u1").unwrap();
        assert_eq!(join(&mut h, ids[2], "r", "u2"), Err(ErrorCode::RoomFull));
        assert_eq!(
            join(&mut h, ids[2], "s", "u2"),
            Err(ErrorCode::TooManyRooms)
        );
        assert_eq!(h.members(r), &ids[..2]);
        // Moving the only member of a room frees the room for the new one.
        let gone = h.remove(ids[1]).unwrap();
        assert!(!gone.emptied && gone.user_id == "u1");
        let s = join(&mut h, ids[0], "s", "u0").unwrap();
        assert_eq!(h.active_rooms(), 1);
        assert_eq!(s, r, "the emptied room's slot is taken again");
        assert_eq!((h.members(s), h.users_in_rooms()), (&ids[..1], 1));
        let from = h.speaker(ids[0]).unwrap();
        assert_eq!((from.user_id, from.members), ("u0", &ids[..1]));
        assert!(h.speaker(ids[1]).is_none());
    }
}
