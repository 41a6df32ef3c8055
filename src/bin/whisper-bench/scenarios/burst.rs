//! `burst`: issue 7's first finding as a benchmark. One room where every
//! member sends its whole message budget at once (30 × ~10 KB at the
//! default limits; 30 × 16 KB and 150 × 2 KB with raised limits) while every
//! member reads at full speed. Nobody is slow, so a relay that keeps its
//! promises closes nobody, loses nothing and shows everyone one order.
//! Figures per variant: members closed with 1013, deliveries lost, members
//! that saw another order, time to the last delivery, the relay's peak RSS.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use smol::Timer;

use super::{Lab, capacity_env, health, health_stat};
use crate::client::{self, ConnectOptions, OP_CLOSE, OP_TEXT, Reader, Writer};
use crate::proc;
use crate::relay::Relay;
use crate::report::Metric;
use crate::traffic::{self, Joined, Seat};
use crate::wire::{self, Dialect, Incoming, Stamp};

/// Full-speed readers: a buffer that takes a large vectored write.
const OPTS: ConnectOptions = ConnectOptions {
    read_buffer: 64 << 10,
    rcvbuf: None,
    dialect: Dialect::V2,
};

/// Give up when no member received anything for this long.
const NO_PROGRESS: Duration = Duration::from_secs(5);
/// And in any case after this long.
const LIMIT: Duration = Duration::from_secs(120);

/// One burst: messages per member, request size, relay variables.
struct Variant {
    label: &'static str,
    messages: u32,
    request_bytes: usize,
    env: &'static [(&'static str, &'static str)],
}

const VARIANTS: [Variant; 3] = [
    Variant {
        label: "10 KB x30 (defaults)",
        messages: 30,
        request_bytes: 10_240,
        env: &[],
    },
    Variant {
        label: "16 KB x30",
        messages: 30,
        request_bytes: 16_384,
        env: &[("RATE_LIMIT_MAX_MESSAGE_SIZE", "16384")],
    },
    Variant {
        label: "2 KB x150",
        messages: 150,
        request_bytes: 2_048,
        env: &[
            ("RATE_LIMIT_MESSAGE_LIMIT", "150"),
            ("RATE_LIMIT_MAX_MESSAGE_SIZE", "2048"),
        ],
    },
];

/// Filler characters that keep a message request within `bytes`.
pub fn filler_for(bytes: usize) -> usize {
    let mut probe = Vec::new();
    let stamp = Stamp {
        sent_ns: 0,
        sender: 0,
        seq: 0,
    };
    wire::message_request(stamp, 4, Dialect::V2, &mut probe);
    let overhead = probe.len() - 4;
    (bytes - overhead) / 4 * 4
}

/// What one member saw.
#[derive(Default)]
struct Member {
    /// `sender << 32 | seq` of each message, in arrival order.
    order: Vec<u64>,
    /// The code of the close frame it got, if any.
    close: Option<u16>,
    /// Done: everything arrived, or the connection ended.
    ended: bool,
}

/// Shared by the members of one burst.
#[derive(Default)]
struct Board {
    members: RefCell<Vec<Member>>,
    /// Deliveries so far, and when the last one arrived.
    received: Cell<u64>,
    last_at: Cell<Option<Instant>>,
    sent: Cell<u64>,
    send_failures: Cell<u64>,
}

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    let members = lab.params.burst_members;
    let mut first_error = None;
    for v in &VARIANTS {
        let mut env = capacity_env(members, 1, members);
        env.extend(v.env.iter().map(|&(k, val)| (k, val.to_string())));
        let result = lab
            .with_relay(&env, async |relay: &mut Relay| burst(lab, relay, v).await)
            .await;
        if let Err(e) = result {
            lab.note(format!("{}: {e}", v.label));
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn burst(lab: &Lab<'_>, relay: &mut Relay, v: &Variant) -> Result<(), String> {
    let n = lab.params.burst_members;
    let seats = (0..n)
        .map(|i| Seat {
            room: "burst".into(),
            user: format!("u{i}"),
            opts: OPTS,
        })
        .collect();
    let joined = traffic::open_all(lab.ex, relay.addr, seats, lab.params.setup_limit(n)).await?;
    let expected = (n * v.messages) as usize;
    let board = Rc::new(Board::default());
    board
        .members
        .borrow_mut()
        .resize_with(n as usize, Member::default);
    let filler = filler_for(v.request_bytes);

    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, Joined { reader, writer, .. }) in joined.into_iter().enumerate() {
        tasks.push(lab.ex.spawn(receive(reader, i, expected, board.clone())));
        let send = send_all(writer, i as u32, v.messages, filler, board.clone());
        tasks.push(lab.ex.spawn(send));
    }
    // Until everyone is done, nothing moves for a while, or the limit.
    let mut seen = 0;
    let mut moved = Instant::now();
    while !board.members.borrow().iter().all(|m| m.ended)
        && moved.elapsed() < NO_PROGRESS
        && t0.elapsed() < LIMIT
    {
        Timer::after(Duration::from_millis(20)).await;
        if board.received.get() != seen {
            seen = board.received.get();
            moved = Instant::now();
        }
    }
    let memory = proc::memory(relay.pid).map_err(|e| format!("reading relay memory: {e}"));
    let stats = health(relay.addr).await;
    traffic::cancel_all(tasks).await;

    let name = |s: &str| format!("{}: {s}", v.label);
    let members = board.members.borrow();
    let closes_1013 = members.iter().filter(|m| m.close == Some(1013)).count();
    let other_closes = members
        .iter()
        .filter(|m| m.close.is_some_and(|c| c != 1013))
        .count();
    let lost: usize = members.iter().map(|m| expected - m.order.len()).sum();
    let reference = members
        .iter()
        .map(|m| &m.order)
        .max_by_key(|o| o.len())
        .cloned()
        .unwrap_or_default();
    let other_order = members
        .iter()
        .filter(|m| !reference.starts_with(&m.order))
        .count();
    let inverted = senders_out_of_order(&reference);
    lab.metric(Metric::new(
        name("1013 closes"),
        "conns",
        closes_1013 as f64,
    ));
    lab.metric(Metric::new(
        name("other closes"),
        "conns",
        other_closes as f64,
    ));
    lab.metric(Metric::new(name("lost"), "deliveries", lost as f64));
    lab.metric(Metric::new(
        name("order violations"),
        "members",
        (other_order + inverted) as f64,
    ));
    if let Some(last) = board.last_at.get() {
        let secs = last.duration_since(t0).as_secs_f64();
        lab.metric(Metric::new(name("time to drain"), "ms", secs * 1000.0));
        let rate = board.received.get() as f64 / secs.max(1e-6);
        lab.metric(Metric::new(name("deliveries/s"), "1/s", rate));
    }
    lab.metric(Metric::new(
        name("peak rss (VmHWM)"),
        "KiB",
        memory?.hwm_kib as f64,
    ));
    match stats {
        Ok(doc) => {
            if let Some(c) = health_stat(&doc, "slow_consumer_closes") {
                lab.metric(Metric::new(name("relay slow_consumer_closes"), "conns", c));
            }
        }
        Err(e) => lab.note(e),
    }
    let sent = board.sent.get();
    if sent != u64::from(n * v.messages) || board.send_failures.get() > 0 {
        lab.note(format!(
            "{}: {sent} of {} messages written, {} writes failed",
            v.label,
            n * v.messages,
            board.send_failures.get()
        ));
    }
    if inverted > 0 {
        lab.note(format!(
            "{}: {inverted} senders' messages arrived out of their sending order",
            v.label
        ));
    }
    Ok(())
}

/// Senders whose messages are not in increasing sequence in `order`.
fn senders_out_of_order(order: &[u64]) -> usize {
    let mut next: Vec<(u64, u64)> = Vec::new();
    let mut bad: Vec<u64> = Vec::new();
    for &packed in order {
        let (sender, seq) = (packed >> 32, packed & 0xffff_ffff);
        match next.iter_mut().find(|(s, _)| *s == sender) {
            Some((_, n)) => {
                if seq < *n && !bad.contains(&sender) {
                    bad.push(sender);
                }
                *n = seq + 1;
            }
            None => next.push((sender, seq + 1)),
        }
    }
    bad.len()
}

/// Writes `messages` stamped messages back to back.
async fn send_all(mut writer: Writer, me: u32, messages: u32, filler: usize, board: Rc<Board>) {
    for seq in 0..messages {
        let stamp = Stamp {
            sent_ns: wire::now_ns(),
            sender: me,
            seq,
        };
        let sent = writer
            .send_with(OP_TEXT, |buf| {
                wire::message_request(stamp, filler, Dialect::V2, buf)
            })
            .await;
        if sent.is_err() {
            board.send_failures.set(board.send_failures.get() + 1);
            return;
        }
        board.sent.set(board.sent.get() + 1);
    }
    // Keep the writing half open until cancelled.
    std::future::pending::<()>().await;
}

/// Reads at full speed until `expected` messages, a close frame or the end.
async fn receive(mut reader: Reader, me: usize, expected: usize, board: Rc<Board>) {
    loop {
        let frame = match reader.next_frame().await {
            Ok(Some(f)) => f,
            _ => break,
        };
        match frame.opcode {
            OP_TEXT => {
                if let Incoming::Message(Some(stamp)) = wire::classify(frame.payload) {
                    board.received.set(board.received.get() + 1);
                    board.last_at.set(Some(Instant::now()));
                    let mut members = board.members.borrow_mut();
                    let m = &mut members[me];
                    m.order
                        .push(u64::from(stamp.sender) << 32 | u64::from(stamp.seq));
                    if m.order.len() >= expected {
                        break;
                    }
                }
            }
            OP_CLOSE => {
                board.members.borrow_mut()[me].close = Some(client::close_code(frame.payload));
                break;
            }
            _ => {}
        }
    }
    board.members.borrow_mut()[me].ended = true;
    std::future::pending::<()>().await;
}
