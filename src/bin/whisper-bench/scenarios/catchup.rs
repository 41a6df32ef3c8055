//! `catch-up`: issue 13's phones coming back. A talker fills a room's
//! history with `catchup_frames` messages of about 2 KB; then
//! `catchup_phones` phones, connected already, all rejoin at once with
//! `since: ""` and each replays the whole history while the talker keeps
//! talking (`TALK_RATE` messages a second). Every message carries the
//! talker's sequence number, so each phone can tell whether it saw every
//! message once, in order, across replay and live traffic.
//!
//! `HISTORY_ROOM_FRAMES` is raised so that the live talk during the rejoin
//! drops nothing from retention: at the default 256 a phone still replaying
//! would skip the oldest frames (and be told `complete: false`), which would
//! hide a real loss among the expected ones.
//!
//! Figures: time from the joins to each phone's history frame (caught up),
//! relay CPU per replayed frame over that time (live deliveries included,
//! and reported), lost and duplicated messages, incomplete histories, slow
//! consumers, and the relay's peak RSS against the memory formula.

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
use crate::traffic;
use crate::wire::{self, Dialect, Incoming, Stamp};

/// Bytes of each message request (the relayed frame is about 2.1 KB).
const REQUEST_BYTES: usize = 2_048;
/// Messages a second the talker sends while the phones rejoin.
const TALK_RATE: u32 = 50;
/// The talker goes on this long after the last phone caught up.
const TALK_AFTER: Duration = Duration::from_secs(1);
/// `RATE_LIMIT_MAX_MESSAGE_SIZE` at its default, for the formula.
const MAX_MESSAGE: u64 = 10_240;
const ROOM: &str = "catchup";

const OPTS: ConnectOptions = ConnectOptions {
    read_buffer: 64 << 10,
    rcvbuf: None,
    dialect: Dialect::V2,
};

/// What one phone saw.
#[derive(Default, Clone)]
struct Phone {
    /// The talker's sequence numbers of the messages, in arrival order.
    seqs: Vec<u32>,
    /// When the history frame came, and what it said.
    caught_up: Option<Duration>,
    count: u64,
    complete: bool,
    close: Option<u16>,
}

/// Shared by the talker and the phones.
#[derive(Default)]
struct Board {
    phones: RefCell<Vec<Phone>>,
    /// Echoes the talker has read, and messages it sent.
    echoed: Cell<u32>,
    sent: Cell<u32>,
    talking: Cell<bool>,
    send_failures: Cell<u32>,
}

pub async fn run(lab: &Lab<'_>) -> Result<(), String> {
    let phones = lab.params.catchup_phones;
    let members = phones + 1;
    let mut env = capacity_env(members + 4, 4, members);
    unlimited_rates(&mut env);
    env.push(("HISTORY_ROOM_FRAMES", "4096".into()));
    lab.with_relay(&env, async |relay: &mut Relay| {
        catch_up(lab, relay, phones).await
    })
    .await
}

fn join_request(user: &str) -> String {
    format!(
        r#"{{"type":"join","data":{{"room":"{ROOM}","user":{{"id":"{user}","name":"{user}","avatar":null}},"since":""}}}}"#
    )
}

async fn catch_up(lab: &Lab<'_>, relay: &mut Relay, phones: u32) -> Result<(), String> {
    let frames = lab.params.catchup_frames;
    let board = Rc::new(Board::default());
    board
        .phones
        .borrow_mut()
        .resize(phones as usize, Phone::default());
    let filler = super::burst::filler_for(REQUEST_BYTES);
    let setup = lab.params.setup_limit(phones + 1);

    // The talker joins with `since` (the room keeps history from then on)
    // and fills it.
    let (reader, mut writer) = client::connect(relay.addr, OPTS)
        .await
        .map_err(|e| format!("talker: {e}"))?;
    writer
        .send(OP_TEXT, join_request("talker").as_bytes())
        .await
        .map_err(|e| format!("talker join: {e}"))?;
    let mut tasks = vec![lab.ex.spawn(talker_reads(reader, board.clone()))];
    for _ in 0..frames {
        send(&mut writer, filler, &board).await;
    }
    let seeded = traffic::wait_for(setup, || board.echoed.get() >= frames).await;
    if !seeded {
        return Err(format!(
            "{} of {frames} seed messages echoed",
            board.echoed.get()
        ));
    }

    // The phones connect, then all rejoin at once.
    let mut conns = Vec::new();
    for i in 0..phones {
        let c = client::connect(relay.addr, OPTS)
            .await
            .map_err(|e| format!("phone {i}: {e}"))?;
        conns.push(c);
    }
    board.talking.set(true);
    tasks.push(lab.ex.spawn(talk(writer, filler, board.clone())));
    let before = lab.sample(relay);
    let t0 = Instant::now();
    for (i, (reader, writer)) in conns.into_iter().enumerate() {
        tasks.push(lab.ex.spawn(phone(reader, writer, i, t0, board.clone())));
    }
    let all_caught_up = || {
        let phones = board.phones.borrow();
        phones
            .iter()
            .all(|p| p.caught_up.is_some() || p.close.is_some())
    };
    let limit = lab.params.drain_limit * 4;
    let caught = traffic::wait_for(limit, all_caught_up).await;
    let used = lab.sample(relay).since(&before);
    let secs = t0.elapsed().as_secs_f64();
    let delivered_then: usize = board.phones.borrow().iter().map(|p| p.seqs.len()).sum();
    Timer::after(TALK_AFTER).await;
    board.talking.set(false);
    // Everyone receives up to the talker's last message.
    let drained = || {
        let last = board.sent.get();
        board.echoed.get() >= last
            && board
                .phones
                .borrow()
                .iter()
                .all(|p| p.close.is_some() || p.seqs.last().is_some_and(|&s| s + 1 >= last))
    };
    traffic::wait_for(lab.params.drain_limit, drained).await;
    let memory = proc::memory(relay.pid).map_err(|e| format!("reading relay memory: {e}"));
    let stats = health(relay.addr).await;
    traffic::cancel_all(tasks).await;

    let sent = board.sent.get();
    let phones_seen = board.phones.borrow();
    let replayed: u64 = phones_seen.iter().map(|p| p.count).sum();
    let mut times: Vec<f64> = phones_seen
        .iter()
        .filter_map(|p| p.caught_up)
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    times.sort_by(f64::total_cmp);
    let (mut lost, mut duplicated, mut misordered) = (0u64, 0u64, 0u64);
    for p in phones_seen.iter() {
        let mut seen = vec![false; sent as usize];
        for (i, &s) in p.seqs.iter().enumerate() {
            match seen.get_mut(s as usize) {
                Some(true) => duplicated += 1,
                Some(slot) => *slot = true,
                None => {}
            }
            if i > 0 && s <= p.seqs[i - 1] {
                misordered += 1;
            }
        }
        lost += seen.iter().filter(|&&s| !s).count() as u64;
    }
    let incomplete = phones_seen.iter().filter(|p| !p.complete).count();
    let closed = phones_seen.iter().filter(|p| p.close.is_some()).count();
    lab.metric(Metric::new("replayed frames", "frames", replayed as f64));
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        let median = times[times.len() / 2];
        lab.metric(Metric::new("caught up, first", "ms", *first));
        lab.metric(Metric::new("caught up, median", "ms", median));
        lab.metric(Metric::new("caught up, all", "ms", *last));
    }
    if replayed > 0 {
        let per = used.cpu_ns as f64 / replayed as f64;
        lab.metric(Metric::new("relay cpu/replayed frame", "ns", per));
        let rate = replayed as f64 / secs.max(1e-6);
        lab.metric(Metric::new("replayed frames/s", "1/s", rate));
    }
    let live = delivered_then as f64 - replayed as f64;
    lab.metric(Metric::new(
        "live deliveries meanwhile",
        "frames",
        live.max(0.0),
    ));
    lab.metric(Metric::new("messages sent", "", f64::from(sent)));
    lab.metric(Metric::new("lost", "msgs", lost as f64));
    lab.metric(Metric::new("duplicated", "msgs", duplicated as f64));
    lab.metric(Metric::new("out of order", "msgs", misordered as f64));
    lab.metric(Metric::new(
        "incomplete histories",
        "phones",
        incomplete as f64,
    ));
    lab.metric(Metric::new("phones closed", "conns", closed as f64));
    let memory = memory?;
    let bound_kib = formula::formula_bytes(u64::from(phones) + 5, 4, MAX_MESSAGE) as f64 / 1024.0;
    let peak = memory.hwm_kib as f64;
    lab.metric(Metric::new("peak rss (VmHWM)", "KiB", peak));
    lab.metric(Metric::new("formula bound", "KiB", bound_kib));
    lab.metric(Metric::new("peak / bound", "%", 100.0 * peak / bound_kib));
    match stats {
        Ok(doc) => {
            for (key, label, unit) in [
                (
                    "slow_consumer_closes",
                    "relay slow_consumer_closes",
                    "conns",
                ),
                ("history_bytes", "relay history_bytes", "B"),
            ] {
                if let Some(v) = health_stat(&doc, key) {
                    lab.metric(Metric::new(label, unit, v));
                }
            }
        }
        Err(e) => lab.note(e),
    }
    if !caught {
        lab.note(format!(
            "not every phone caught up within {} s",
            limit.as_secs()
        ));
    }
    if board.send_failures.get() > 0 {
        lab.note(format!(
            "{} talker writes failed",
            board.send_failures.get()
        ));
    }
    Ok(())
}

/// One stamped message from the talker.
async fn send(writer: &mut Writer, filler: usize, board: &Board) {
    let stamp = Stamp {
        sent_ns: wire::now_ns(),
        sender: 0,
        seq: board.sent.get(),
    };
    let r = writer
        .send_with(OP_TEXT, |buf| {
            wire::message_request(stamp, filler, Dialect::V2, buf)
        })
        .await;
    match r {
        Ok(()) => board.sent.set(board.sent.get() + 1),
        Err(_) => board.send_failures.set(board.send_failures.get() + 1),
    }
}

/// The talker's live traffic: `TALK_RATE` messages a second while talking.
async fn talk(mut writer: Writer, filler: usize, board: Rc<Board>) {
    let mut timer = Timer::interval(Duration::from_secs(1) / TALK_RATE);
    while board.talking.get() {
        send(&mut writer, filler, &board).await;
        (&mut timer).await;
    }
    std::future::pending::<()>().await;
}

/// The talker reads its echoes.
async fn talker_reads(mut reader: Reader, board: Rc<Board>) {
    while let Ok(Some(f)) = reader.next_frame().await {
        if f.opcode == OP_TEXT && matches!(wire::classify(f.payload), Incoming::Message(_)) {
            board.echoed.set(board.echoed.get() + 1);
        }
    }
    std::future::pending::<()>().await;
}

/// A phone: rejoins with `since: ""` and reads at full speed.
async fn phone(mut reader: Reader, mut writer: Writer, me: usize, t0: Instant, board: Rc<Board>) {
    if writer
        .send(OP_TEXT, join_request(&format!("p{me}")).as_bytes())
        .await
        .is_err()
    {
        board.phones.borrow_mut()[me].close = Some(0);
        std::future::pending::<()>().await;
    }
    while let Ok(Some(f)) = reader.next_frame().await {
        let mut phones = board.phones.borrow_mut();
        let p = &mut phones[me];
        match f.opcode {
            OP_TEXT if f.payload.starts_with(br#"{"type":"history""#) => {
                let v: serde_json::Value = serde_json::from_slice(f.payload).unwrap_or_default();
                p.caught_up = Some(t0.elapsed());
                p.count = v["count"].as_u64().unwrap_or(0);
                p.complete = v["complete"] == true;
            }
            OP_TEXT => {
                if let Incoming::Message(Some(stamp)) = wire::classify(f.payload) {
                    p.seqs.push(stamp.seq);
                }
            }
            OP_CLOSE => {
                p.close = Some(client::close_code(f.payload));
                break;
            }
            _ => {}
        }
    }
    std::future::pending::<()>().await;
}
