//! Rate limits and abuse handling: per-connection budgets and the per-IP
//! table of open connections, strikes and escalating blocks.
//!
//! Everything here is plain data driven by an explicit clock (`now` in
//! microseconds) so it can be unit tested without waiting.

use std::collections::HashMap;
use std::net::IpAddr;

use heapless::Deque;

/// Compiled capacity: most strikes counted in the one-minute window (the
/// upper end of `BLOCK_STRIKE_LIMIT`).
pub const STRIKE_LIMIT_CAP: u32 = 64;

const MINUTE_US: u64 = 60_000_000;
const DAY_US: u64 = 24 * 60 * MINUTE_US;

/// A token bucket holding `limit` tokens that refills one token every
/// `60 / limit` seconds, kept as a single "theoretical arrival time" (GCRA):
/// eight bytes per budget and no floating point.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// The time at which the bucket would be full again.
    full_at: u64,
}

impl Budget {
    /// A full bucket.
    pub const fn new() -> Budget {
        Budget { full_at: 0 }
    }

    /// Takes one token if there is one. `limit` is the per-minute budget.
    pub fn try_take(&mut self, limit: u32, now: u64) -> bool {
        let interval = MINUTE_US / u64::from(limit.max(1));
        let burst = interval * u64::from(limit.max(1));
        let full_at = self.full_at.max(now);
        // Taking a token pushes the "full again" time one interval later; it
        // may run at most `burst` ahead of now.
        if full_at + interval > now + burst {
            return false;
        }
        self.full_at = full_at + interval;
        true
    }

    /// Whether the bucket is full at `now`: such a budget is the same as a
    /// new one, so it need not be kept.
    pub fn is_full(&self, now: u64) -> bool {
        self.full_at <= now
    }

    /// Microseconds until one token is available (0: one is).
    fn wait_micros(&self, limit: u32, now: u64) -> u64 {
        let interval = MINUTE_US / u64::from(limit.max(1));
        let burst = interval * u64::from(limit.max(1));
        (self.full_at + interval).saturating_sub(now + burst)
    }

    /// Seconds until one token is available (at least 1).
    pub fn retry_after_secs(&self, limit: u32, now: u64) -> u64 {
        self.wait_micros(limit, now).div_ceil(1_000_000).max(1)
    }

    /// Milliseconds until one token is available (at least 1): the legacy
    /// dialect's `resetTime`.
    pub fn retry_after_millis(&self, limit: u32, now: u64) -> u64 {
        self.wait_micros(limit, now).div_ceil(1_000).max(1)
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new()
    }
}

/// Block lengths for the first, second, third ... block of one IP.
pub fn block_duration_us(level: u32) -> u64 {
    // 1, 5, 25, 125 minutes ..., capped at two hours.
    let minutes = 5u64.saturating_pow(level).min(120);
    minutes * MINUTE_US
}

/// Maps an IPv4-mapped IPv6 address to plain IPv4 so one client counts once.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// What the table knows about one client IP.
#[derive(Debug, Default)]
struct IpRecord {
    /// Open WebSocket connections.
    open: u32,
    /// Connections still in their HTTP request or handshake.
    pending: u32,
    /// Times of the strikes in the last minute (deciseconds would do, but
    /// microseconds keep the arithmetic in one unit). Boxed: only IPs that
    /// misbehave pay for the window.
    strikes: Option<Box<Deque<u64, { STRIKE_LIMIT_CAP as usize }>>>,
    /// When the last strike happened (for the 24 h reset).
    last_strike: u64,
    /// Number of blocks so far (the escalation level of the next one).
    blocks: u32,
    /// Blocked until this time (0: not blocked).
    blocked_until: u64,
}

impl IpRecord {
    fn is_idle(&self, now: u64) -> bool {
        self.open == 0
            && self.pending == 0
            && self.blocked_until <= now
            && (self.strikes.is_none() || now.saturating_sub(self.last_strike) > MINUTE_US)
    }
}

/// Outcome of [`IpTable::strike`].
#[derive(Debug, PartialEq, Eq)]
pub enum StrikeOutcome {
    /// Counted; the IP is not blocked (yet).
    Counted,
    /// The IP is now blocked for this many microseconds.
    Blocked(u64),
}

/// Why a new connection may not be admitted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Blocked; retry after this many seconds.
    Blocked(u64),
    /// The IP already has `RATE_LIMIT_CONNECTION_LIMIT_PER_IP` connections.
    TooManyConnections,
    /// The table of tracked IPs is full.
    TableFull,
}

/// The per-IP table: bounded to `capacity` records. Records of IPs with no
/// connections and no recent trouble are dropped when room is needed; block
/// history is kept while there is room, so escalation survives reconnects.
pub struct IpTable {
    records: HashMap<IpAddr, IpRecord>,
    capacity: usize,
    per_ip_limit: u32,
    strike_limit: u32,
    /// IPs blocked since start (a counter for metrics).
    pub blocks_total: u64,
    /// Strikes since start (a counter for metrics).
    pub strikes_total: u64,
}

impl IpTable {
    /// An empty table of at most `capacity` records.
    pub fn new(capacity: usize, per_ip_limit: u32, strike_limit: u32) -> IpTable {
        IpTable {
            records: HashMap::new(),
            capacity,
            per_ip_limit,
            strike_limit,
            blocks_total: 0,
            strikes_total: 0,
        }
    }

    fn record(&mut self, ip: IpAddr, now: u64) -> Option<&mut IpRecord> {
        if !self.records.contains_key(&ip) {
            if self.records.len() >= self.capacity {
                self.evict_one(now);
            }
            if self.records.len() >= self.capacity {
                return None;
            }
            self.records.insert(ip, IpRecord::default());
        }
        self.records.get_mut(&ip)
    }

    /// Drops one record that holds nothing current, preferring one without
    /// block history.
    fn evict_one(&mut self, now: u64) {
        let victim = self
            .records
            .iter()
            .filter(|(_, r)| r.is_idle(now))
            .min_by_key(|(_, r)| (r.blocks, r.last_strike))
            .map(|(ip, _)| *ip);
        if let Some(ip) = victim {
            self.records.remove(&ip);
        }
    }

    /// Drops records that carry nothing: no connections, no strikes in the
    /// window, no block history younger than a day.
    pub fn sweep(&mut self, now: u64) {
        self.records.retain(|_, r| {
            !(r.is_idle(now) && (r.blocks == 0 || now.saturating_sub(r.last_strike) > DAY_US))
        });
    }

    /// Seconds left on a block of `ip`, if it is blocked.
    #[cfg(test)]
    pub fn blocked_for(&self, ip: IpAddr, now: u64) -> Option<u64> {
        let r = self.records.get(&ip)?;
        (r.blocked_until > now).then(|| (r.blocked_until - now).div_ceil(1_000_000))
    }

    /// Counts a connection that is still in its HTTP phase. `max_pending` bounds
    /// how many one IP may hold at once.
    pub fn begin_pending(&mut self, ip: IpAddr, max_pending: u32, now: u64) -> bool {
        match self.record(ip, now) {
            Some(r) if r.pending < max_pending => {
                r.pending += 1;
                true
            }
            _ => false,
        }
    }

    /// Ends what [`IpTable::begin_pending`] began.
    pub fn end_pending(&mut self, ip: IpAddr) {
        if let Some(r) = self.records.get_mut(&ip) {
            r.pending = r.pending.saturating_sub(1);
        }
    }

    /// Admission of a WebSocket connection: checks the block and the per-IP
    /// limit and counts the connection when it is admitted.
    pub fn admit(&mut self, ip: IpAddr, now: u64) -> Result<(), Refusal> {
        let limit = self.per_ip_limit;
        let Some(r) = self.record(ip, now) else {
            return Err(Refusal::TableFull);
        };
        if r.blocked_until > now {
            return Err(Refusal::Blocked(
                (r.blocked_until - now).div_ceil(1_000_000),
            ));
        }
        if r.open >= limit {
            return Err(Refusal::TooManyConnections);
        }
        r.open += 1;
        Ok(())
    }

    /// Checks whether `ip` could be admitted without counting it.
    pub fn check(&self, ip: IpAddr, now: u64) -> Result<(), Refusal> {
        if let Some(r) = self.records.get(&ip) {
            if r.blocked_until > now {
                return Err(Refusal::Blocked(
                    (r.blocked_until - now).div_ceil(1_000_000),
                ));
            }
            if r.open >= self.per_ip_limit {
                return Err(Refusal::TooManyConnections);
            }
        }
        Ok(())
    }

    /// Forgets one closed connection of `ip`.
    pub fn release(&mut self, ip: IpAddr) {
        if let Some(r) = self.records.get_mut(&ip) {
            r.open = r.open.saturating_sub(1);
        }
    }

    /// Records a strike; blocks the IP when it reaches the limit within a minute.
    pub fn strike(&mut self, ip: IpAddr, now: u64) -> StrikeOutcome {
        self.strikes_total += 1;
        let limit = self.strike_limit as usize;
        let Some(r) = self.record(ip, now) else {
            return StrikeOutcome::Counted;
        };
        if r.blocks > 0 && now.saturating_sub(r.last_strike) > DAY_US {
            r.blocks = 0;
        }
        r.last_strike = now;
        let window = r.strikes.get_or_insert_with(|| Box::new(Deque::new()));
        while window
            .front()
            .is_some_and(|&t| now.saturating_sub(t) >= MINUTE_US)
        {
            window.pop_front();
        }
        if window.is_full() {
            window.pop_front();
        }
        let _ = window.push_back(now);
        if window.len() < limit {
            return StrikeOutcome::Counted;
        }
        r.strikes = None;
        let length = block_duration_us(r.blocks);
        r.blocks += 1;
        r.blocked_until = now + length;
        self.blocks_total += 1;
        StrikeOutcome::Blocked(length)
    }

    /// IPs blocked right now.
    pub fn blocked_count(&self, now: u64) -> usize {
        self.records
            .values()
            .filter(|r| r.blocked_until > now)
            .count()
    }

    /// Records held (tests only).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// No records held (tests only).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;

    #[test]
    fn budget_allows_a_burst_then_one_token_per_interval() {
        let mut b = Budget::new();
        let t0 = 100 * S;
        for i in 0..30 {
            assert!(b.try_take(30, t0), "token {i}");
        }
        assert!(!b.try_take(30, t0));
        assert_eq!(b.retry_after_secs(30, t0), 2);
        assert_eq!(b.retry_after_millis(30, t0), 2000);
        assert_eq!(b.retry_after_millis(30, t0 + 1_500_001), 500);
        // 60/30 = 2 s per token.
        assert!(!b.try_take(30, t0 + 2 * S - 1));
        assert!(b.try_take(30, t0 + 2 * S));
        assert!(!b.try_take(30, t0 + 2 * S));
        // A long pause refills completely but never beyond the burst.
        let later = t0 + 3600 * S;
        for _ in 0..30 {
            assert!(b.try_take(30, later));
        }
        assert!(!b.try_take(30, later));
    }

    #[test]
    fn budget_of_one_per_minute() {
        let mut b = Budget::new();
        assert!(b.try_take(1, 10 * S));
        assert!(!b.try_take(1, 69 * S));
        assert!(b.try_take(1, 70 * S));
    }

    #[test]
    fn block_lengths_escalate_and_cap() {
        let m = 60 * S;
        assert_eq!(block_duration_us(0), m);
        assert_eq!(block_duration_us(1), 5 * m);
        assert_eq!(block_duration_us(2), 25 * m);
        assert_eq!(block_duration_us(3), 120 * m);
        assert_eq!(block_duration_us(40), 120 * m);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_connection_limit() {
        let mut t = IpTable::new(16, 2, 20);
        let a = ip("10.0.0.1");
        assert_eq!(t.admit(a, 0), Ok(()));
        assert_eq!(t.admit(a, 0), Ok(()));
        assert_eq!(t.admit(a, 0), Err(Refusal::TooManyConnections));
        assert_eq!(t.admit(ip("10.0.0.2"), 0), Ok(()));
        t.release(a);
        assert_eq!(t.admit(a, 0), Ok(()));
    }

    #[test]
    fn strikes_within_a_minute_block_and_escalate() {
        let mut t = IpTable::new(16, 10, 3);
        let a = ip("10.0.0.1");
        assert_eq!(t.strike(a, 0), StrikeOutcome::Counted);
        assert_eq!(t.strike(a, S), StrikeOutcome::Counted);
        assert_eq!(t.strike(a, 2 * S), StrikeOutcome::Blocked(60 * S));
        assert_eq!(t.admit(a, 3 * S), Err(Refusal::Blocked(59)));
        assert_eq!(t.blocked_for(a, 3 * S), Some(59));
        // After the block: the next block is five minutes.
        let t1 = 200 * S;
        assert_eq!(t.admit(a, t1), Ok(()));
        t.strike(a, t1);
        t.strike(a, t1);
        assert_eq!(t.strike(a, t1), StrikeOutcome::Blocked(300 * S));
        // A day without strikes starts again at one minute.
        let t2 = t1 + DAY_US + 400 * S;
        t.strike(a, t2);
        t.strike(a, t2);
        assert_eq!(t.strike(a, t2), StrikeOutcome::Blocked(60 * S));
        assert_eq!(t.blocks_total, 3);
    }

    #[test]
    fn strikes_spread_over_more_than_a_minute_do_not_block() {
        let mut t = IpTable::new(16, 10, 3);
        let a = ip("10.0.0.1");
        for i in 0..10 {
            assert_eq!(t.strike(a, i * 31 * S), StrikeOutcome::Counted);
        }
    }

    #[test]
    fn table_is_bounded_and_evicts_idle_records() {
        let mut t = IpTable::new(2, 10, 20);
        assert!(t.admit(ip("10.0.0.1"), 0).is_ok());
        assert!(t.admit(ip("10.0.0.2"), 0).is_ok());
        assert_eq!(t.admit(ip("10.0.0.3"), 0), Err(Refusal::TableFull));
        t.release(ip("10.0.0.1"));
        assert!(t.admit(ip("10.0.0.3"), 0).is_ok());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn mapped_ipv6_is_ipv4() {
        assert_eq!(canonical_ip(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(canonical_ip(ip("::1")), ip("::1"));
    }
}
