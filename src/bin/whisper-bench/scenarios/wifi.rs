//! `wifi`: a busy room where most members read at a phone's pace, and one
//! stops reading. Four members talk in bursts (each sends 10 messages of
//! ~10 KB back to back every second, all four at once: 400 KB arrive
//! together) and read at full speed; the others read like phones on Wi-Fi
//! (at most 2 MB/s, a 100 ms pause every 500 ms, an 8 KiB receive buffer),
//! except one that never reads. Relay limits are the defaults except the
//! message and frame budgets. Figures: phones evicted (should be none), the
//! time until the stopped member is evicted, phones' losses, and the relay's
//! peak RSS against the memory formula.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use smol::Timer;

use super::{Lab, capacity_env, health, health_stat, unlimited_rates};
use crate::client::{self, ConnectOptions, OP_CLOSE, OP_TEXT, Reader, Writer};
use crate::formula;
use crate::proc;
use crate::relay::Relay;
use crate::report::Metric;
use crate::traffic::{self, Joined, Seat};
use crate::wire::{self, Dialect, Incoming, Stamp};

const SENDERS: u32 = 4;
/// Messages each sender sends back to back, once a second.
const BURST: u32 = 10;
const BURST_PERIOD: Duration = Duration::from_secs(1);
/// `RATE_LIMIT_MAX_MESSAGE_SIZE` at its default.
const MAX_MESSAGE: usize = 10_240;
/// A phone: bytes a second, and a pause of `PAUSE` every `PAUSE_EVERY`.
const PHONE_RATE: f64 = 2_000_000.0;
const PAUSE_EVERY: Duration = Duration::from_millis(500);
const PAUSE: Duration = Duration::from_millis(100);
/// Bytes a phone may take at once (its token bucket's size).
const PHONE_CHUNK: f64 = 16.0 * 1024.0;

const SENDER: ConnectOptions = ConnectOptions {
    read_buffer: 64 << 10,
    rcvbuf: None,
    dialect: Dialect::V2,
};
const PHONE: ConnectOptions = ConnectOptions {
    read_buffer: 16 << 10,
    rcvbuf: Some(8 << 10),
    dialect: Dialect::V2,
};
const STOPPED: ConnectOptions = ConnectOptions {
    read_buffer: 512,
    rcvbuf: Some(4 << 10),
    dialect: Dialect::V2,
};
const STOPPED_ID: &str = "stopped";

/// What the members saw.
#[derive(Default)]
struct Board {
    /// Messages received per member (in seat order).
    received: RefCell<Vec<u64>>,
    /// Close codes received per member.
    closes: RefCell<Vec<Option<u16>>>,
    /// Users seen leaving (by any sender), with when, first sighting only.
    left: RefCell<Vec<(String, Duration)>>,
    sent: Cell<u64>,
    send_failures: Cell<u64>,
    stop: Cell<bool>,
}

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    let members = lab.params.wifi_members.max(SENDERS + 2);
    let mut env = capacity_env(members, 1, members);
    unlimited_rates(&mut env);
    lab.with_relay(&env, async |relay: &mut Relay| {
        room(lab, relay, members).await
    })
    .await
}

async fn room(lab: &Lab<'_>, relay: &mut Relay, members: u32) -> Result<(), String> {
    let phones = members - SENDERS - 1;
    // Seats: the stopped member, the senders, the phones.
    let mut seats = vec![Seat {
        room: "wifi".into(),
        user: STOPPED_ID.into(),
        opts: STOPPED,
    }];
    seats.extend((0..SENDERS).map(|i| Seat {
        room: "wifi".into(),
        user: format!("s{i}"),
        opts: SENDER,
    }));
    seats.extend((0..phones).map(|i| Seat {
        room: "wifi".into(),
        user: format!("p{i}"),
        opts: PHONE,
    }));
    let mut joined =
        traffic::open_all(lab.ex, relay.addr, seats, lab.params.setup_limit(members)).await?;
    let _stopped: Joined = joined.remove(0);
    let board = Rc::new(Board::default());
    board.received.borrow_mut().resize(joined.len(), 0);
    board.closes.borrow_mut().resize(joined.len(), None);
    let filler = super::burst::filler_for(MAX_MESSAGE);

    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (i, Joined { reader, writer, .. }) in joined.into_iter().enumerate() {
        if (i as u32) < SENDERS {
            tasks.push(lab.ex.spawn(full_speed(reader, i, t0, board.clone())));
            let send = send_bursts(writer, i as u32, filler, board.clone());
            tasks.push(lab.ex.spawn(send));
        } else {
            tasks.push(lab.ex.spawn(phone(reader, writer, i, board.clone())));
        }
    }
    Timer::after(lab.params.wifi_phase).await;
    board.stop.set(true);
    // Phones still in the room catch up with what was sent.
    let caught_up = || {
        let sent = board.sent.get();
        let received = board.received.borrow();
        let closes = board.closes.borrow();
        (SENDERS as usize..received.len()).all(|i| closes[i].is_some() || received[i] >= sent)
    };
    traffic::wait_for(lab.params.drain_limit, caught_up).await;
    let memory = proc::memory(relay.pid).map_err(|e| format!("reading relay memory: {e}"));
    let stats = health(relay.addr).await;
    traffic::cancel_all(tasks).await;

    let left = board.left.borrow();
    let closes = board.closes.borrow();
    let received = board.received.borrow();
    let is_phone = |i: usize| i >= SENDERS as usize;
    let evicted = |i: usize, user: &str| closes[i].is_some() || left.iter().any(|(u, _)| u == user);
    let phones_evicted = (SENDERS as usize..closes.len())
        .filter(|&i| evicted(i, &format!("p{}", i - SENDERS as usize)))
        .count();
    let senders_evicted = (0..SENDERS as usize)
        .filter(|&i| evicted(i, &format!("s{i}")))
        .count();
    let sent = board.sent.get();
    let phones_lost: u64 = (0..received.len())
        .filter(|&i| is_phone(i) && closes[i].is_none())
        .map(|i| sent.saturating_sub(received[i]))
        .sum();
    lab.metric(Metric::new(
        format!("phones evicted (of {phones})"),
        "conns",
        phones_evicted as f64,
    ));
    lab.metric(Metric::new(
        "talking members evicted",
        "conns",
        senders_evicted as f64,
    ));
    let stopped_at = left
        .iter()
        .find(|(u, _)| u == STOPPED_ID)
        .map(|(_, at)| *at);
    lab.metric(Metric::new(
        "stopped member evicted",
        "yes=1",
        if stopped_at.is_some() { 1.0 } else { 0.0 },
    ));
    if let Some(at) = stopped_at {
        let ms = at.as_secs_f64() * 1000.0;
        lab.metric(Metric::new("time to evict the stopped member", "ms", ms));
    }
    lab.metric(Metric::new("messages sent", "", sent as f64));
    lab.metric(Metric::new(
        "lost by phones still in",
        "msgs",
        phones_lost as f64,
    ));
    let memory = memory?;
    let bound_kib = formula::formula_bytes(members.into(), 1, MAX_MESSAGE as u64) as f64 / 1024.0;
    let peak = memory.hwm_kib as f64;
    lab.metric(Metric::new("peak rss (VmHWM)", "KiB", peak));
    lab.metric(Metric::new("formula bound", "KiB", bound_kib));
    lab.metric(Metric::new("peak / bound", "%", 100.0 * peak / bound_kib));
    match stats {
        Ok(doc) => {
            if let Some(c) = health_stat(&doc, "slow_consumer_closes") {
                lab.metric(Metric::new("relay slow_consumer_closes", "conns", c));
            }
        }
        Err(e) => lab.note(e),
    }
    if board.send_failures.get() > 0 {
        lab.note(format!("{} writes failed", board.send_failures.get()));
    }
    Ok(())
}

/// Every `BURST_PERIOD`, `BURST` messages back to back, until the stop.
async fn send_bursts(mut writer: Writer, me: u32, filler: usize, board: Rc<Board>) {
    let mut seq = 0;
    let mut timer = Timer::interval(BURST_PERIOD);
    while !board.stop.get() {
        for _ in 0..BURST {
            let stamp = Stamp {
                sent_ns: wire::now_ns(),
                sender: me,
                seq,
            };
            seq += 1;
            let r = writer
                .send_with(OP_TEXT, |buf| {
                    wire::message_request(stamp, filler, Dialect::V2, buf)
                })
                .await;
            if r.is_err() {
                board.send_failures.set(board.send_failures.get() + 1);
                std::future::pending::<()>().await;
            }
            board.sent.set(board.sent.get() + 1);
        }
        (&mut timer).await;
    }
    std::future::pending::<()>().await;
}

/// Records one frame for member `me`; false once the connection is done.
/// Departures are timed from `t0` by the members that pass it (the
/// full-speed readers: a phone sees them late).
fn on_frame(opcode: u8, payload: &[u8], me: usize, t0: Option<Instant>, board: &Board) -> bool {
    match opcode {
        OP_TEXT => match wire::classify(payload) {
            Incoming::Message(_) => board.received.borrow_mut()[me] += 1,
            Incoming::UserLeft(user) => {
                let Some(t0) = t0 else { return true };
                let mut left = board.left.borrow_mut();
                if !left.iter().any(|(u, _)| u == user) {
                    left.push((user.to_string(), t0.elapsed()));
                }
            }
            _ => {}
        },
        OP_CLOSE => {
            board.closes.borrow_mut()[me] = Some(client::close_code(payload));
            return false;
        }
        _ => {}
    }
    true
}

/// A talking member's reader: full speed.
async fn full_speed(mut reader: Reader, me: usize, t0: Instant, board: Rc<Board>) {
    while let Ok(Some(f)) = reader.next_frame().await {
        if !on_frame(f.opcode, f.payload, me, Some(t0), &board) {
            break;
        }
    }
    std::future::pending::<()>().await;
}

/// A phone: reads at most `PHONE_RATE` bytes a second (a token bucket of
/// `PHONE_CHUNK`, so no catching up at loopback speed after a pause), and
/// pauses `PAUSE` every `PAUSE_EVERY`. Its writer stays open, unused.
async fn phone(mut reader: Reader, _writer: Writer, me: usize, board: Rc<Board>) {
    let t0 = Instant::now();
    let mut next_pause = t0 + PAUSE_EVERY;
    let mut tokens = PHONE_CHUNK;
    let mut last = t0;
    loop {
        let now = Instant::now();
        if now >= next_pause {
            Timer::after(PAUSE).await;
            next_pause = Instant::now() + PAUSE_EVERY;
            last = Instant::now();
            continue;
        }
        tokens = (tokens + PHONE_RATE * now.duration_since(last).as_secs_f64()).min(PHONE_CHUNK);
        last = now;
        if tokens < PHONE_CHUNK / 2.0 {
            let wait = (PHONE_CHUNK / 2.0 - tokens) / PHONE_RATE;
            Timer::after(Duration::from_secs_f64(wait)).await;
            continue;
        }
        let Ok(Some(f)) = reader.next_frame().await else {
            break;
        };
        tokens -= f.payload.len() as f64;
        if !on_frame(f.opcode, f.payload, me, None, &board) {
            break;
        }
    }
    std::future::pending::<()>().await;
}
