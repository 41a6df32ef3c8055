//! The README's worst-case memory formula ("Memory" section), with every
//! constant in one place.

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// The README's constants, in bytes.
pub struct Constants {
    /// B: code, libc, executor, empty tables.
    pub base: f64,
    /// S: state per connection (besides its read buffer).
    pub per_connection: f64,
    /// Room record (member array, log header).
    pub per_room: f64,
    /// Q: global outbound byte budget.
    pub queue_budget: f64,
    /// F = L + this: one frame admitted past the budget.
    pub frame_overhead: f64,
    /// Connections that may be in their HTTP phase at once...
    pub pending_heads: f64,
    /// ...each holding a request head buffer of this size.
    pub head_bytes: f64,
    /// The per-IP table holds C + this many entries...
    pub ip_extra_entries: f64,
    /// ...of this size each.
    pub ip_entry: f64,
}

pub const README: Constants = Constants {
    base: 2.4 * MIB,
    per_connection: 2.0 * KIB,
    per_room: 1.2 * KIB,
    queue_budget: 8.0 * MIB,
    frame_overhead: 512.0,
    pending_heads: 256.0,
    head_bytes: 9.0 * KIB,
    ip_extra_entries: 1024.0,
    ip_entry: 100.0,
};

/// Worst-case resident bytes for C = `conns`, R = `rooms`, L = `max_msg`:
/// `B + C(S+L) + R·room + Q + (C+R)·F + pending·head + (C+extra)·ip`.
pub fn formula_bytes(conns: u64, rooms: u64, max_msg: u64) -> u64 {
    let k = &README;
    let (c, r, l) = (conns as f64, rooms as f64, max_msg as f64);
    let f = l + k.frame_overhead;
    let total = k.base
        + c * (k.per_connection + l)
        + r * k.per_room
        + k.queue_budget
        + (c + r) * f
        + k.pending_heads * k.head_bytes
        + (c + k.ip_extra_entries) * k.ip_entry;
    total.round() as u64
}

/// One line naming the constants, for the report.
pub fn describe() -> String {
    let k = &README;
    format!(
        "B={:.1} MiB, S={:.0} KiB, room={:.1} KiB, Q={:.0} MiB, F=L+{:.0} B, \
         pending={:.0}x{:.0} KiB, IP table=(C+{:.0})x{:.0} B",
        k.base / MIB,
        k.per_connection / KIB,
        k.per_room / KIB,
        k.queue_budget / MIB,
        k.frame_overhead,
        k.pending_heads,
        k.head_bytes / KIB,
        k.ip_extra_entries,
        k.ip_entry
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
        "frame_overhead_bytes": k.frame_overhead,
        "pending_heads": k.pending_heads,
        "head_bytes": k.head_bytes,
        "ip_extra_entries": k.ip_extra_entries,
        "ip_entry_bytes": k.ip_entry,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README: "At the defaults (C = 4096, R = 1024, L = 10 KiB) that is
    /// about ... 115 MiB".
    #[test]
    fn defaults_give_the_readme_total() {
        let mib = formula_bytes(4096, 1024, 10240) as f64 / MIB;
        assert!((114.0..=116.5).contains(&mib), "{mib}");
    }
}
