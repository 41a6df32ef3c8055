//! The README's worst-case memory formula ("Memory" section), with every
//! constant in one place.

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// The README's constants, in bytes.
pub struct Constants {
    /// B: code, libc, executor, empty tables.
    pub base: f64,
    /// S: state per connection: idle (about 0.8 KiB) plus tungstenite's
    /// state while a frame is under way (1.1 KiB).
    pub per_connection: f64,
    /// Room record (name, member array grown to the room's size, log
    /// header, index entry).
    pub per_room: f64,
    /// Q: global outbound byte budget.
    pub queue_budget: f64,
    /// The shared read budget is the larger of this and `read_budget_messages` × L.
    pub read_budget_min: f64,
    pub read_budget_messages: f64,
    /// Copies of the message being handled: this many × L.
    pub handled_messages: f64,
    /// F = max(L, member list) + this: one operation's frames past the budget.
    pub frame_overhead: f64,
    /// The member list of a full room of the default size (64 × 0.8 KiB).
    pub member_list: f64,
    /// Connections that may be in their HTTP phase at once...
    pub pending_heads: f64,
    /// ...each holding a request head buffer (9 KiB), plus as many answered
    /// connections waiting for their client to close (task and response,
    /// 5 KiB): this much per slot.
    pub head_bytes: f64,
    /// The per-IP table holds C + this many entries...
    pub ip_extra_entries: f64,
    /// ...of this size each.
    pub ip_entry: f64,
    /// HB: catch-up history, frames with their bookkeeping (`HISTORY_BUDGET_BYTES`).
    pub history_budget: f64,
    /// HR: rooms with history (`HISTORY_ROOMS`)...
    pub history_rooms: f64,
    /// ...each with this much outside HB: its record (481 B) and 4
    /// remembered evicted rooms (36 B each).
    pub history_room: f64,
}

pub const README: Constants = Constants {
    base: 2.6 * MIB,
    per_connection: 2.0 * KIB,
    per_room: 0.7 * KIB,
    queue_budget: 16.0 * MIB,
    read_budget_min: 2.0 * MIB,
    read_budget_messages: 4.0,
    handled_messages: 2.0,
    frame_overhead: 512.0,
    member_list: 64.0 * 0.8 * KIB,
    pending_heads: 256.0,
    head_bytes: 14.0 * KIB,
    ip_extra_entries: 1024.0,
    ip_entry: 100.0,
    history_budget: 8.0 * MIB,
    history_rooms: 1024.0,
    history_room: 481.0 + 4.0 * 36.0,
};

/// Worst-case resident bytes for C = `conns`, R = `rooms`, L = `max_msg`:
/// `B + C·S + max(2 MiB, 4L) + 2L + R·room + Q + F + pending·head + (C+extra)·ip
/// + HB + HR·history_room`.
pub fn formula_bytes(conns: u64, rooms: u64, max_msg: u64) -> u64 {
    let k = &README;
    let (c, r, l) = (conns as f64, rooms as f64, max_msg as f64);
    let f = l.max(k.member_list) + k.frame_overhead;
    let reads = k.read_budget_min.max(k.read_budget_messages * l) + k.handled_messages * l;
    let total = k.base
        + c * k.per_connection
        + reads
        + r * k.per_room
        + k.queue_budget
        + f
        + k.pending_heads * k.head_bytes
        + (c + k.ip_extra_entries) * k.ip_entry
        + k.history_budget
        + k.history_rooms * k.history_room;
    total.round() as u64
}

/// One line naming the constants, for the report.
pub fn describe() -> String {
    let k = &README;
    format!(
        "B={:.1} MiB, S={:.0} KiB, room={:.1} KiB, Q={:.0} MiB, reads=max({:.0} MiB, {:.0}L)+{:.0}L, \
         F=max(L, {:.0} KiB)+{:.0} B, pending={:.0}x{:.0} KiB, IP table=(C+{:.0})x{:.0} B, \
         history={:.0} MiB+{:.0}x{:.0} B",
        k.base / MIB,
        k.per_connection / KIB,
        k.per_room / KIB,
        k.queue_budget / MIB,
        k.read_budget_min / MIB,
        k.read_budget_messages,
        k.handled_messages,
        k.member_list / KIB,
        k.frame_overhead,
        k.pending_heads,
        k.head_bytes / KIB,
        k.ip_extra_entries,
        k.ip_entry,
        k.history_budget / MIB,
        k.history_rooms,
        k.history_room
    )
}

/// The constants as JSON, in bytes.
pub fn constants_json() -> serde_json::Value {
    let k = &README;
    serde_json::json!({
        "base_bytes": k.base,
        "per_connection_bytes": k.per_connection,
        "per_room_bytes": k.per_room,
        "queue_budget_bytes": k.queue_budget,
        "read_budget_min_bytes": k.read_budget_min,
        "read_budget_messages": k.read_budget_messages,
        "handled_messages": k.handled_messages,
        "frame_overhead_bytes": k.frame_overhead,
        "member_list_bytes": k.member_list,
        "pending_heads": k.pending_heads,
        "head_bytes": k.head_bytes,
        "ip_extra_entries": k.ip_extra_entries,
        "ip_entry_bytes": k.ip_entry,
        "history_budget_bytes": k.history_budget,
        "history_rooms": k.history_rooms,
        "history_room_bytes": k.history_room,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README: "At the defaults (C = 4096, R = 1024, L = 10 KiB, ...)
    /// that is about ... 42 MiB" (the relay's `board::memory_bound_bytes`
    /// has the same range in its own test).
    #[test]
    fn defaults_give_the_readme_total() {
        let mib = formula_bytes(4096, 1024, 10240) as f64 / MIB;
        assert!((41.0..=42.5).contains(&mib), "{mib}");
    }
}
