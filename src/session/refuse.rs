//! What a session refuses, and how: error replies (with a strike where the
//! contract counts one), `RATE_LIMITED` with its retry time, and the closes
//! for a flood of frames, an oversize message and a framing error.

use async_tungstenite::tungstenite::{self, error::CapacityError};

use super::Session;
use super::read::{Budgets, Limit};
use crate::conns::Close;
use crate::protocol::{Dialect, ErrorCode};
use crate::relay::Relay;

impl Session {
    /// Sends an error with its standard text; those the contract counts as
    /// strikes are counted.
    pub(super) fn reject(&self, relay: &mut Relay, code: ErrorCode) {
        self.reject_without_strike(relay, code);
        if code.is_strike() {
            let ip = relay.conns.ip_of(self.id);
            relay.strike(ip);
        }
    }

    /// Sends an error with its standard text, never counting a strike.
    pub(super) fn reject_without_strike(&self, relay: &mut Relay, code: ErrorCode) {
        relay.stats.protocol_errors += 1;
        relay.send_error(self.id, self.dialect.dialect, code);
    }

    /// `RATE_LIMITED` for a request whose budget is spent: the text says when
    /// to retry; legacy message budgets add `resetTime` in milliseconds.
    pub(super) fn reject_rate_limited(
        &self,
        relay: &mut Relay,
        limit: Limit,
        what: &str,
        now: u64,
    ) {
        let budgets = self.budgets.as_deref().unwrap_or(&Budgets::FULL);
        let (budget, per_minute) = match limit {
            Limit::Messages => (&budgets.messages, self.cfg.message_limit),
            Limit::Joins => (&budgets.joins, self.cfg.join_limit),
        };
        let wait = budget.retry_after_secs(per_minute, now);
        let text = format!("too many {what} frames; retry in {wait} s");
        let dialect = self.dialect.dialect;
        let reset_ms = (limit == Limit::Messages && dialect == Dialect::Legacy)
            .then(|| budget.retry_after_millis(per_minute, now));
        relay.stats.protocol_errors += 1;
        relay.stats.rate_limited += 1;
        let code = ErrorCode::RateLimited;
        relay.send_error_text(self.id, dialect, code, &text, reset_ms);
        let ip = relay.conns.ip_of(self.id);
        relay.strike(ip);
    }

    pub(super) fn on_error(&mut self, err: tungstenite::Error) {
        let frames = self.reader().get_ref().frames();
        let close = match err {
            // tungstenite takes a length with its top bit set for a size.
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. })
                if frames.bad_length() =>
            {
                Close::Now(1002, "protocol error")
            }
            tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. }) => {
                return self.refuse_oversize();
            }
            tungstenite::Error::Utf8(_) => Close::Now(1007, "invalid UTF-8"),
            tungstenite::Error::Protocol(_) | tungstenite::Error::Capacity(_) => {
                Close::Now(1002, "protocol error")
            }
            _ => Close::Drop,
        };
        self.relay.borrow_mut().begin_close(self.id, close);
        // The stream is unusable after an error; what follows is raw reading.
        self.stream_broken = true;
        self.abandon_reader();
    }

    /// A message over `RATE_LIMIT_MAX_MESSAGE_SIZE`: `MESSAGE_TOO_LARGE`, a
    /// strike and close 1009. Reading goes on raw, discarding the rest.
    pub(super) fn refuse_oversize(&mut self) {
        let mut relay = self.relay.borrow_mut();
        if relay.conns.close_state(self.id) == Close::Open {
            relay.stats.oversize_messages += 1;
            relay.send_error(self.id, self.dialect.dialect, ErrorCode::MessageTooLarge);
            relay.begin_close(self.id, Close::Now(1009, "message too large"));
            let ip = relay.conns.ip_of(self.id);
            relay.strike(ip);
        }
        drop(relay);
        self.stream_broken = true;
        self.abandon_reader();
    }

    /// After a framing error: tungstenite's state (and whatever partial
    /// message it holds) is dropped at once and its budget shares given
    /// back. The frame tracker is kept, as it still tells where the client's
    /// close frame is in what follows.
    fn abandon_reader(&mut self) {
        let io = self.reader().get_mut().abandoned();
        self.replace_reader(io);
    }

    /// More frames than `RATE_LIMIT_FRAME_LIMIT` allows: close 1008 and a
    /// strike.
    pub(super) fn refuse_flood(&mut self) {
        let mut relay = self.relay.borrow_mut();
        if relay.conns.close_state(self.id) == Close::Open {
            relay.stats.flood_closes += 1;
            relay.begin_close(self.id, Close::Now(1008, "frame rate limit exceeded"));
            let ip = relay.conns.ip_of(self.id);
            relay.strike(ip);
        }
    }
}
