//! Room members as the generator runs them: opening and joining many
//! connections, the receive loop, senders, and the tally of what arrived.
//!
//! Everything runs on one single-threaded executor, so shared state is
//! `Cell`/`RefCell` behind `Rc`.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use smol::future::FutureExt;
use smol::lock::Mutex;
use smol::{LocalExecutor, Task, Timer};

use crate::client::{self, ConnectOptions, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, Reader, Writer};
use crate::stats::Histogram;
use crate::wire::{self, Dialect, Incoming, Stamp};

/// Handshakes in flight at once: the relay accepts at most 16 connections
/// per IP in their HTTP phase.
const HANDSHAKE_CONCURRENCY: usize = 8;

/// One connection to open: the room it joins and its user id.
#[derive(Clone, Debug)]
pub struct Seat {
    pub room: String,
    pub user: String,
    pub opts: ConnectOptions,
}

/// An open, joined connection.
pub struct Joined {
    pub reader: Reader,
    pub writer: Writer,
    pub dialect: Dialect,
}

/// Opens a connection, joins, and waits for the `userList`.
pub async fn open_member(addr: SocketAddr, seat: &Seat) -> Result<Joined, String> {
    let (mut reader, mut writer) = client::connect(addr, seat.opts)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let join = wire::join_request(&seat.room, &seat.user, seat.opts.dialect);
    writer
        .send(OP_TEXT, join.as_bytes())
        .await
        .map_err(|e| format!("send join: {e}"))?;
    loop {
        let frame = reader
            .next_frame()
            .await
            .map_err(|e| format!("read: {e}"))?
            .ok_or("closed before userList")?;
        match frame.opcode {
            OP_TEXT => match wire::classify(frame.payload) {
                Incoming::UserList => break,
                Incoming::Error(code) => return Err(format!("join refused: {code}")),
                _ => {}
            },
            OP_PING => {
                let payload = frame.payload.to_vec();
                let _ = writer.send(OP_PONG, &payload).await;
            }
            OP_CLOSE => {
                let code = client::close_code(frame.payload);
                return Err(format!("closed ({code}) before userList"));
            }
            _ => {}
        }
    }
    Ok(Joined {
        reader,
        writer,
        dialect: seat.opts.dialect,
    })
}

/// Seats still to open, with their positions.
type SeatQueue = Rc<RefCell<std::iter::Enumerate<std::vec::IntoIter<Seat>>>>;
/// Opened members, by seat position.
type Slots = Rc<RefCell<Vec<Option<Joined>>>>;

/// A worker that opens seats from `queue` one after another into `slots`.
async fn opener(addr: SocketAddr, queue: SeatQueue, slots: Slots) -> Result<(), String> {
    loop {
        let next = queue.borrow_mut().next();
        let Some((i, seat)) = next else {
            return Ok(());
        };
        let joined = open_member(addr, &seat)
            .await
            .map_err(|e| format!("{} in {}: {e}", seat.user, seat.room))?;
        slots.borrow_mut()[i] = Some(joined);
    }
}

/// Opens and joins every seat, a few handshakes at a time. Fails on the
/// first error or when `limit` passes.
pub async fn open_all(
    ex: &LocalExecutor<'static>,
    addr: SocketAddr,
    seats: Vec<Seat>,
    limit: Duration,
) -> Result<Vec<Joined>, String> {
    let total = seats.len();
    let queue: SeatQueue = Rc::new(RefCell::new(seats.into_iter().enumerate()));
    let slots: Slots = Rc::new(RefCell::new((0..total).map(|_| None).collect()));
    let mut workers: Vec<_> = (0..HANDSHAKE_CONCURRENCY.min(total))
        .map(|_| ex.spawn(opener(addr, queue.clone(), slots.clone())))
        .collect();
    let all = async {
        for w in &mut workers {
            w.await?;
        }
        Ok(())
    };
    let timeout = async {
        Timer::after(limit).await;
        Err(format!("setup not done within {} s", limit.as_secs()))
    };
    let outcome: Result<(), String> = all.or(timeout).await;
    cancel_all(workers).await;
    let opened: Vec<Joined> = slots.borrow_mut().drain(..).flatten().collect();
    let count = opened.len();
    match outcome {
        Ok(()) if count == total => Ok(opened),
        Ok(()) => Err(format!("only {count} of {total} connections opened")),
        Err(e) => Err(format!("{e} ({count} of {total} connections opened)")),
    }
}

/// What the members of one measured phase saw, added up.
#[derive(Default)]
pub struct Tally {
    /// Messages written.
    pub sent: Cell<u64>,
    /// Deliveries that should follow from them.
    pub expected: Cell<u64>,
    /// Distinct (sender, seq) deliveries received.
    pub received: Cell<u64>,
    pub duplicates: Cell<u64>,
    /// Messages whose content held no stamp.
    pub unreadable: Cell<u64>,
    /// `error` frames received, and the first code.
    pub errors: Cell<u64>,
    pub first_error: RefCell<Option<String>>,
    /// Close frames and disconnects seen by reading members.
    pub closes: Cell<u64>,
    pub disconnects: Cell<u64>,
    /// Writes that failed.
    pub send_failures: Cell<u64>,
    /// User ids announced by `userLeft`.
    pub left: RefCell<HashSet<String>>,
    /// Latency of each distinct delivery, µs.
    pub latency: RefCell<Histogram>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get() + n);
}

impl Tally {
    /// Starts a new phase; everything measured so far is forgotten.
    pub fn reset(&self) {
        for c in [
            &self.sent,
            &self.expected,
            &self.received,
            &self.duplicates,
            &self.unreadable,
            &self.errors,
            &self.closes,
            &self.disconnects,
            &self.send_failures,
        ] {
            c.set(0);
        }
        self.first_error.borrow_mut().take();
        self.left.borrow_mut().clear();
        self.latency.borrow_mut().clear();
    }

    /// Expected deliveries not (yet) received.
    pub fn missing(&self) -> u64 {
        self.expected.get().saturating_sub(self.received.get())
    }

    fn note_error(&self, code: &str) {
        bump(&self.errors, 1);
        self.first_error
            .borrow_mut()
            .get_or_insert_with(|| code.to_string());
    }
}

/// Per-receiver record of the next sequence number expected from each
/// sender (messages of a room arrive in one order for every member).
#[derive(Default)]
pub struct SeqTracker {
    next: Vec<(u32, u32)>,
}

impl SeqTracker {
    /// Whether `(sender, seq)` is new to this receiver.
    pub fn observe(&mut self, sender: u32, seq: u32) -> bool {
        match self.next.iter_mut().find(|(s, _)| *s == sender) {
            Some((_, next)) if seq < *next => false,
            Some((_, next)) => {
                *next = seq + 1;
                true
            }
            None => {
                self.next.push((sender, seq + 1));
                true
            }
        }
    }
}

/// Switches shared by all members of a scenario.
#[derive(Default)]
pub struct Control {
    /// Senders stop at the next opportunity.
    pub stop: Cell<bool>,
    /// A sender sends its next message when its own echo arrives.
    pub closed_loop: Cell<bool>,
    /// Closed-loop senders stop once this many messages were sent in all.
    pub limit: Cell<Option<u64>>,
}

/// A member's sending side: its writer (shared with its receive loop, which
/// answers pings), its identity and its next sequence number.
pub struct Outbox {
    pub me: u32,
    writer: Mutex<Writer>,
    next_seq: Cell<u32>,
    /// Deliveries each message should produce (readers in the room).
    receivers: u32,
    /// Characters of filler content per message.
    filler: usize,
    dialect: Dialect,
    /// In closed-loop mode, the member whose receipt of this member's message
    /// releases the next one: itself (its echo), unless set. Legacy senders
    /// get no echo, so another member of the room stands in.
    pacer: Cell<Option<u32>>,
}

impl Outbox {
    pub fn new(
        me: u32,
        writer: Writer,
        receivers: u32,
        filler: usize,
        dialect: Dialect,
    ) -> Rc<Outbox> {
        Rc::new(Outbox {
            me,
            writer: Mutex::new(writer),
            next_seq: Cell::new(0),
            receivers,
            filler,
            dialect,
            pacer: Cell::new(None),
        })
    }

    /// Lets member `pacer`'s receipt of this member's messages release the
    /// next one in closed-loop mode (instead of the echo).
    pub fn set_pacer(&self, pacer: u32) {
        self.pacer.set(Some(pacer));
    }

    /// Whether member `receiver` getting one of this member's messages
    /// releases the next one in closed-loop mode.
    fn paced_by(&self, receiver: u32) -> bool {
        self.pacer.get().unwrap_or(self.me) == receiver
    }

    /// Sends one stamped message and counts what it should produce.
    pub async fn send_message(&self, tally: &Tally) -> io::Result<()> {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        let mut writer = self.writer.lock().await;
        let result = writer
            .send_with(OP_TEXT, |buf| {
                let stamp = Stamp {
                    sent_ns: wire::now_ns(),
                    sender: self.me,
                    seq,
                };
                wire::message_request(stamp, self.filler, self.dialect, buf);
            })
            .await;
        match &result {
            Ok(()) => {
                bump(&tally.sent, 1);
                bump(&tally.expected, u64::from(self.receivers));
            }
            Err(_) => bump(&tally.send_failures, 1),
        }
        result
    }

    async fn send_pong(&self, payload: &[u8]) {
        let _ = self.writer.lock().await.send(OP_PONG, payload).await;
    }
}

/// Joined members whose frames are being read, with their shared counters.
pub struct Crowd {
    /// One per member, in seat order.
    pub outboxes: Vec<Rc<Outbox>>,
    pub readers: Vec<Task<()>>,
    pub tally: Rc<Tally>,
    pub control: Rc<Control>,
}

/// Starts a receive loop for every member. `receivers` is how many members
/// get each message a member sends; `filler` pads the messages it sends.
pub fn start_receivers(
    ex: &LocalExecutor<'static>,
    members: Vec<Joined>,
    receivers: u32,
    filler: usize,
) -> Crowd {
    let tally = Rc::new(Tally::default());
    let control = Rc::new(Control::default());
    let mut outboxes = Vec::with_capacity(members.len());
    let mut inboxes = Vec::with_capacity(members.len());
    for (i, member) in members.into_iter().enumerate() {
        let outbox = Outbox::new(i as u32, member.writer, receivers, filler, member.dialect);
        outboxes.push(outbox);
        inboxes.push(member.reader);
    }
    let all: Rc<[Rc<Outbox>]> = outboxes.clone().into();
    let readers = inboxes
        .into_iter()
        .enumerate()
        .map(|(i, reader)| {
            let receive = receive_loop(reader, i, all.clone(), tally.clone(), control.clone());
            ex.spawn(receive)
        })
        .collect();
    Crowd {
        outboxes,
        readers,
        tally,
        control,
    }
}

/// Reads member `me`'s frames until the connection ends: records
/// deliveries, answers pings, and in closed-loop mode sends a sender's next
/// message when its pacer (its own echo, by default) receives one.
pub async fn receive_loop(
    mut reader: Reader,
    me: usize,
    all: Rc<[Rc<Outbox>]>,
    tally: Rc<Tally>,
    control: Rc<Control>,
) {
    let outbox = &all[me];
    let mut seen = SeqTracker::default();
    loop {
        let frame = match reader.next_frame().await {
            Ok(Some(frame)) => frame,
            _ => {
                bump(&tally.disconnects, 1);
                return;
            }
        };
        match frame.opcode {
            OP_TEXT => {
                let sender = on_text(frame.payload, &mut seen, &tally)
                    .and_then(|s| all.get(s as usize))
                    .filter(|s| s.paced_by(outbox.me));
                let under_limit = control.limit.get().is_none_or(|l| tally.sent.get() < l);
                if let Some(sender) = sender
                    && control.closed_loop.get()
                    && !control.stop.get()
                    && under_limit
                {
                    let _ = sender.send_message(&tally).await;
                }
            }
            OP_PING => outbox.send_pong(frame.payload).await,
            OP_CLOSE => {
                bump(&tally.closes, 1);
                return;
            }
            _ => {}
        }
    }
}

/// Handles one text frame; the sender when it is a stamped message.
fn on_text(text: &[u8], seen: &mut SeqTracker, tally: &Tally) -> Option<u32> {
    match wire::classify(text) {
        Incoming::Message(Some(stamp)) => {
            if seen.observe(stamp.sender, stamp.seq) {
                bump(&tally.received, 1);
                let age_us = wire::now_ns().saturating_sub(stamp.sent_ns) / 1000;
                tally.latency.borrow_mut().record(age_us);
            } else {
                bump(&tally.duplicates, 1);
            }
            Some(stamp.sender)
        }
        Incoming::Message(None) => {
            bump(&tally.unreadable, 1);
            None
        }
        Incoming::UserLeft(user) => {
            tally.left.borrow_mut().insert(user.to_string());
            None
        }
        Incoming::Error(code) => {
            tally.note_error(code);
            None
        }
        Incoming::UserList | Incoming::Other => None,
    }
}

/// Sends one message every `period` from `first` on until the stop switch.
/// A late timer fires repeatedly to catch up, so the offered rate holds.
pub async fn send_every(
    outbox: Rc<Outbox>,
    tally: Rc<Tally>,
    control: Rc<Control>,
    first: Instant,
    period: Duration,
) {
    let mut timer = Timer::interval_at(first, period);
    loop {
        (&mut timer).await;
        if control.stop.get() || outbox.send_message(&tally).await.is_err() {
            return;
        }
    }
}

/// Sends `n` messages back to back (a closed loop's initial window).
pub async fn send_burst(outbox: Rc<Outbox>, tally: Rc<Tally>, n: u32) {
    for _ in 0..n {
        if outbox.send_message(&tally).await.is_err() {
            return;
        }
    }
}

/// Cancels tasks and waits until their futures, and the sockets they
/// hold, are dropped (merely dropping a `Task` leaves that to the executor's
/// next turn).
pub async fn cancel_all<T>(tasks: Vec<Task<T>>) {
    for task in tasks {
        task.cancel().await;
    }
}

/// Waits until `done` holds or `limit` passes, checking every 10 ms.
/// Returns whether `done` held.
pub async fn wait_for(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        Timer::after(Duration::from_millis(10)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_tells_new_from_repeated() {
        let mut t = SeqTracker::default();
        assert!(t.observe(7, 0));
        assert!(t.observe(7, 1));
        assert!(!t.observe(7, 1));
        assert!(t.observe(9, 5));
        assert!(t.observe(7, 3));
        assert!(!t.observe(7, 2));
    }
}
