//! Admission to the HTTP phase: the listener's socket options, the accept
//! loop, and the table of connections whose request head is being read.
//!
//! The table holds at most `HTTP_PENDING_LIMIT` connections. While it is
//! full, new connections wait in the kernel's accept queue, and one that has
//! made no progress for a while is evicted to make room. Once it is half
//! full, a client IP with `HTTP_PENDING_LIMIT_PER_IP` connections in it is
//! refused (trusted proxies are exempt).

use std::cell::Cell;
use std::cell::RefCell;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::{Async, Timer};

use super::Shared;
use super::head::{self, HeadError};
use super::refusals::{Reject, refuse};
use super::routes;
use crate::clock;
use crate::limits::canonical_ip;
use crate::session::Session;

/// Listen backlog: connections wait in the kernel's accept queue while the
/// HTTP-phase table is full (Linux caps it at `net.core.somaxconn`, 4096 by
/// default). The socket unit's `Backlog=` is the same.
const LISTEN_BACKLOG: i32 = 4096;
/// A full table makes room by closing the pending connection that has made
/// no progress for the longest time, once that is at least this long;
/// otherwise new connections wait in the accept queue.
const EVICT_IDLE_MICROS: u64 = 250_000;

/// One connection in its HTTP phase, shared by the table and its task.
struct Pending {
    /// When its last byte arrived (its accept time before the first).
    last_progress: Cell<u64>,
    /// Tells the task to give up its slot (answering 408).
    evict: Sender<()>,
}

/// The HTTP-phase table: the connections whose request head is being read.
pub(super) struct Table {
    pending: RefCell<Vec<Rc<Pending>>>,
    /// Signalled whenever a slot frees.
    freed: (Sender<()>, Receiver<()>),
}

impl Table {
    /// An empty table.
    pub(super) fn new() -> Table {
        Table {
            pending: RefCell::new(Vec::new()),
            freed: smol::channel::bounded(1),
        }
    }

    /// How many connections are in their HTTP phase now.
    pub(super) fn len(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Takes `entry` out of the table (it may be gone already: evicted).
    fn remove(&self, entry: &Rc<Pending>) {
        self.pending.borrow_mut().retain(|p| !Rc::ptr_eq(p, entry));
    }
}

/// A slot in the HTTP-phase table; dropping it frees the slot and the IP's count.
struct Slot<'a> {
    shared: &'a Shared,
    /// Its entry in the table, where reading the head records progress.
    entry: Rc<Pending>,
    /// The address counted against `HTTP_PENDING_LIMIT_PER_IP` (none for a
    /// trusted proxy).
    counted_ip: Option<IpAddr>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.shared.table.remove(&self.entry);
        if let Some(ip) = self.counted_ip {
            self.shared.hub.borrow_mut().ips.end_pending(ip);
        }
        let _ = self.shared.table.freed.0.try_send(());
    }
}

/// Socket options set once on the listener and inherited by every accepted
/// socket (Linux copies them in `accept`), instead of two system calls per
/// connection: no Nagle delay, a fixed send buffer.
///
/// `TCP_DEFER_ACCEPT` would save a wake-up per connection, but it hides a
/// silent client from the process for the defer period, which would stretch
/// the `HANDSHAKE_TIMEOUT_SECS` deadline the contract promises: not used.
///
/// Also: the listen backlog is set to `LISTEN_BACKLOG` (`listen` again on a
/// listening socket only changes it; a socket from systemd gets the same),
/// and the open-file limit is raised to its hard limit, so `MAX_CONNECTIONS`
/// is not cut short by a soft limit of 1024 outside systemd.
pub(super) fn tune_listener(listener: &std::net::TcpListener) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use nix::sys::socket::{Backlog, listen, setsockopt, sockopt};
    let _ = setsockopt(listener, sockopt::TcpNoDelay, &true);
    let _ = setsockopt(
        listener,
        sockopt::SndBuf,
        &crate::session::SEND_BUFFER_BYTES,
    );
    if let Ok(backlog) = Backlog::new(LISTEN_BACKLOG) {
        let _ = listen(listener, backlog);
    }
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// Accepts until it is dropped (the shutdown path drops it, closing the
/// listener). Every accepted connection gets an answer: a task of its own
/// that reads its head, or a `429 TOO_MANY_PENDING` when its IP's share of
/// the table is used.
pub(super) async fn accept_loop(
    shared: Rc<Shared>,
    listener: async_net::TcpListener,
) -> &'static str {
    loop {
        make_room(&shared).await;
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and similar: back off instead of spinning.
                log::warn!("accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ip = canonical_ip(peer.ip());
        let sock: Arc<Async<TcpStream>> = stream.into();
        let now = clock::now_micros();
        let exempt = shared.cfg.trusted_proxies.contains(&ip);
        let share = ip_share(
            shared.table.len(),
            shared.cfg.pending_limit,
            shared.cfg.pending_limit_per_ip,
        );
        let counted = exempt || shared.hub.borrow_mut().ips.begin_pending(ip, share, now);
        if !counted {
            log::debug!("{ip}: too many connections in their HTTP phase");
            let reply = refuse(&shared, Reject::TooManyPending);
            let task_shared = shared.clone();
            shared
                .ex
                .spawn(async move { head::respond(&task_shared, &sock, &reply).await })
                .detach();
            continue;
        }
        let (evict, evicted) = smol::channel::bounded(1);
        let entry = Rc::new(Pending {
            last_progress: Cell::new(now),
            evict,
        });
        shared.table.pending.borrow_mut().push(entry.clone());
        let counted_ip = (!exempt).then_some(ip);
        let task = connection_task(shared.clone(), sock, peer, entry, counted_ip, evicted);
        shared.ex.spawn(task).detach();
        // Let the new connection read its head before the next accept: in a
        // burst, each request is served as it comes instead of all of them
        // piling into the table first.
        smol::future::yield_now().await;
    }
}

/// One connection's HTTP phase: its head, read while it holds its slot in
/// the table (`entry`), then the answer, or the upgrade, after which the
/// connection runs as a session task of its own.
async fn connection_task(
    shared: Rc<Shared>,
    sock: Arc<Async<TcpStream>>,
    peer: SocketAddr,
    entry: Rc<Pending>,
    counted_ip: Option<IpAddr>,
    evicted: Receiver<()>,
) {
    let slot = Slot {
        shared: &shared,
        entry,
        counted_ip,
    };
    let deadline = Instant::now() + shared.handshake_limit();
    let mut is_head = false;
    let progress = &slot.entry.last_progress;
    let head = head::read_head(&sock, progress, deadline, &evicted, &mut is_head).await;
    drop(slot);
    let (req, leftover) = match head {
        Ok(head) => head,
        Err(HeadError::Closed) => return,
        Err(HeadError::Refused(reject)) => {
            let reply = refuse(&shared, reject);
            head::answer(&shared, &sock, is_head, &reply).await;
            return;
        }
    };
    if let Some((id, leftover)) = routes::serve(&shared, &sock, peer, req, leftover, is_head).await
    {
        let hub = shared.hub.clone();
        let session = Session::new(id, hub, shared.cfg.clone(), sock, leftover).await;
        // A task of its own: its allocation is just the session.
        shared.ex.spawn(session).detach();
    }
}

/// How many connections one IP may have in a table holding `pending` of
/// `limit`: unbounded until the table is half full, so a burst from one
/// address (a NAT, a restart) uses the free room; `per_ip` from then on.
fn ip_share(pending: usize, limit: u32, per_ip: u32) -> u32 {
    if pending * 2 >= limit as usize {
        per_ip
    } else {
        u32::MAX
    }
}

/// Returns once the HTTP-phase table has a free slot. A full table evicts
/// the connection that has made no progress for the longest time, once that
/// is `EVICT_IDLE_MICROS` or more; until then new connections stay in the
/// kernel's accept queue.
async fn make_room(shared: &Shared) {
    loop {
        let stalest = {
            let table = shared.table.pending.borrow();
            if table.len() < shared.cfg.pending_limit as usize {
                return;
            }
            table.iter().min_by_key(|p| p.last_progress.get()).cloned()
        };
        let Some(stalest) = stalest else { return };
        let idle = clock::now_micros().saturating_sub(stalest.last_progress.get());
        if idle >= EVICT_IDLE_MICROS {
            // Out of the table at once; its task answers 408 and closes.
            shared.table.remove(&stalest);
            let _ = stalest.evict.try_send(());
            shared.http_phase.borrow_mut().evicted += 1;
            return;
        }
        let wait = Duration::from_micros(EVICT_IDLE_MICROS - idle);
        async {
            let _ = shared.table.freed.1.recv().await;
        }
        .or(async {
            Timer::after(wait).await;
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_ip_share_binds_once_the_table_is_half_full() {
        assert_eq!(ip_share(0, 256, 16), u32::MAX);
        assert_eq!(ip_share(127, 256, 16), u32::MAX);
        assert_eq!(ip_share(128, 256, 16), 16);
        assert_eq!(ip_share(256, 256, 16), 16);
        // An odd limit: half of 5 is reached at 3.
        assert_eq!(ip_share(2, 5, 1), u32::MAX);
        assert_eq!(ip_share(3, 5, 1), 1);
    }
}
