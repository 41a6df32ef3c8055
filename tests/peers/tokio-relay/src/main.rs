//! tokio-relay: a benchmark peer, not a product.
//!
//! A WebSocket chat relay written the way most people would write one on
//! tokio and axum, so that `whisper-bench` can measure it side by side with
//! rtce2ee-whisper and report ratios. It is deliberately ordinary:
//!
//! - a multi-threaded tokio runtime, axum's `ws` upgrade, tungstenite's
//!   default settings (buffers untuned);
//! - one `Arc<Mutex<HashMap<room, members>>>` shared by every connection;
//! - per connection a reader loop, a writer task, and an unbounded
//!   `tokio::sync::mpsc` channel between whoever sends and that writer.
//!
//! It speaks the subset of the v2 protocol (`/ws`) that the bench's clients
//! use: `join` (→ `userList` to the joiner, itself included, and
//! `userJoined` to the others), `message` (relayed to every member, the
//! sender included, with `id`, `user`, `content`, `timestamp`), `typing`,
//! `leave` and close (→ `userLeft`), `ping` (→ `pong`), and answers a
//! WebSocket close with a close.
//!
//! What it does not do, on purpose: no limits of any kind (connections,
//! rooms, room sizes, rates, message sizes, slow consumers: queues are
//! unbounded), no validation of ids, names or content beyond JSON shape, no
//! history or catch-up, no legacy dialect, no `/health` or `/metrics`, no
//! heartbeat, no graceful close of clients at shutdown. Its figures are
//! only meaningful as ratios against the relay measured in the same run.
//!
//! Start-up contract with the bench: `HOST` [0.0.0.0] and `PORT` [8080]
//! (0 picks a free port), `listening on ADDR` on stderr once bound,
//! `--version` on stdout, exit status 0 after SIGTERM or SIGINT.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// A user as clients describe themselves in `join`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct User {
    id: String,
    name: String,
    #[serde(default)]
    avatar: Option<String>,
}

/// What a client sends.
#[derive(Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "camelCase")]
enum Incoming {
    Ping,
    Join { room: String, user: User },
    Leave,
    Message { content: String },
    Typing(Typing),
}

/// The body of a `typing` request.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Typing {
    is_typing: bool,
}

/// What the relay sends.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum Outgoing<'a> {
    Pong,
    UserList {
        users: Vec<&'a User>,
    },
    UserJoined {
        user: &'a User,
    },
    #[serde(rename_all = "camelCase")]
    UserLeft {
        user_id: &'a str,
    },
    Message {
        id: String,
        user: &'a User,
        content: &'a str,
        timestamp: String,
    },
    #[serde(rename_all = "camelCase")]
    UserTyping {
        user: &'a User,
        is_typing: bool,
    },
    Error {
        code: &'static str,
        message: &'static str,
    },
}

impl Outgoing<'_> {
    fn frame(&self) -> Message {
        let text = serde_json::to_string(self).expect("outgoing frames always serialize");
        Message::Text(Utf8Bytes::from(text))
    }
}

/// One member of a room: its connection's id, who it is, its writer's queue.
struct Member {
    conn: u64,
    user: User,
    tx: mpsc::UnboundedSender<Message>,
}

/// Everything the connections share.
struct Hub {
    rooms: Mutex<HashMap<String, Vec<Member>>>,
    next_conn: AtomicU64,
    next_message: AtomicU64,
    /// Start time in ms, so that message ids differ across restarts.
    boot_ms: u64,
}

type Shared = Arc<Hub>;

impl Hub {
    /// Sends `frame` to every member of `room` but `except`.
    fn broadcast(members: &[Member], frame: &Message, except: Option<u64>) {
        for m in members.iter().filter(|m| Some(m.conn) != except) {
            let _ = m.tx.send(frame.clone());
        }
    }

    fn join(&self, conn: u64, room: &str, user: User, tx: &mpsc::UnboundedSender<Message>) {
        let mut rooms = self.rooms.lock().unwrap();
        let members = rooms.entry(room.to_string()).or_default();
        Hub::broadcast(members, &Outgoing::UserJoined { user: &user }.frame(), None);
        members.push(Member {
            conn,
            user,
            tx: tx.clone(),
        });
        let users = members.iter().map(|m| &m.user).collect();
        let _ = tx.send(Outgoing::UserList { users }.frame());
    }

    fn leave(&self, conn: u64, room: &str) {
        let mut rooms = self.rooms.lock().unwrap();
        let Some(members) = rooms.get_mut(room) else {
            return;
        };
        let Some(at) = members.iter().position(|m| m.conn == conn) else {
            return;
        };
        let gone = members.remove(at);
        if members.is_empty() {
            rooms.remove(room);
        } else {
            let frame = Outgoing::UserLeft {
                user_id: &gone.user.id,
            }
            .frame();
            Hub::broadcast(members, &frame, None);
        }
    }

    fn message(&self, conn: u64, room: &str, content: &str) {
        let id = format!(
            "{:x}-{}",
            self.boot_ms,
            self.next_message.fetch_add(1, Ordering::Relaxed)
        );
        let timestamp = rfc3339_ms(now_ms());
        let rooms = self.rooms.lock().unwrap();
        let Some(members) = rooms.get(room) else {
            return;
        };
        let Some(me) = members.iter().find(|m| m.conn == conn) else {
            return;
        };
        let frame = Outgoing::Message {
            id,
            user: &me.user,
            content,
            timestamp,
        }
        .frame();
        Hub::broadcast(members, &frame, None);
    }

    fn typing(&self, conn: u64, room: &str, is_typing: bool) {
        let rooms = self.rooms.lock().unwrap();
        let Some(members) = rooms.get(room) else {
            return;
        };
        let Some(me) = members.iter().find(|m| m.conn == conn) else {
            return;
        };
        let frame = Outgoing::UserTyping {
            user: &me.user,
            is_typing,
        }
        .frame();
        Hub::broadcast(members, &frame, Some(conn));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `ms` since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn rfc3339_ms(ms: u64) -> String {
    let (days, rest) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

async fn upgrade(ws: WebSocketUpgrade, State(hub): State<Shared>) -> Response {
    ws.on_upgrade(move |socket| serve_socket(socket, hub))
}

/// One connection: a writer task draining the queue, and this reader loop.
async fn serve_socket(socket: WebSocket, hub: Shared) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if sink.send(msg).await.is_err() {
                break;
            }
        }
    });
    let conn = hub.next_conn.fetch_add(1, Ordering::Relaxed);
    let mut room: Option<String> = None;
    let error = |code, message| Outgoing::Error { code, message }.frame();
    while let Some(Ok(msg)) = stream.next().await {
        let text = match msg {
            Message::Text(text) => text,
            // tungstenite has queued the close reply; the next read sends
            // it and then ends the stream.
            Message::Close(_) => continue,
            Message::Binary(_) => {
                let _ = tx.send(error("INVALID_MESSAGE", "text frames only"));
                continue;
            }
            // Pings are answered by tungstenite itself.
            _ => continue,
        };
        let request = match serde_json::from_str::<Incoming>(&text) {
            Ok(request) => request,
            Err(e) => {
                let frame = if e.is_data() {
                    error("INVALID_MESSAGE", "unknown request")
                } else {
                    error("INVALID_JSON", "not JSON")
                };
                let _ = tx.send(frame);
                continue;
            }
        };
        match (request, &room) {
            (Incoming::Ping, _) => {
                let _ = tx.send(Outgoing::Pong.frame());
            }
            (Incoming::Join { room: name, user }, current) => {
                if let Some(old) = current {
                    hub.leave(conn, old);
                }
                hub.join(conn, &name, user, &tx);
                room = Some(name);
            }
            (Incoming::Leave, Some(name)) => {
                hub.leave(conn, name);
                room = None;
            }
            (Incoming::Message { content }, Some(name)) => hub.message(conn, name, &content),
            (Incoming::Typing(t), Some(name)) => hub.typing(conn, name, t.is_typing),
            (_, None) => {
                let _ = tx.send(error("NOT_IN_ROOM", "join a room first"));
            }
        }
    }
    if let Some(name) = room {
        hub.leave(conn, &name);
    }
    drop(tx);
    let _ = writer.await;
}

/// Resolves at SIGTERM or SIGINT; the handlers are installed at once, so
/// that a signal right after the `listening on` line is not fatal.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("tokio-relay {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let host = std::env::var("HOST").unwrap_or_else(|_| "0.0.0.0".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = tokio::net::TcpListener::bind(format!("{host}:{port}")).await?;
    let addr: SocketAddr = listener.local_addr()?;
    let hub = Arc::new(Hub {
        rooms: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(0),
        next_message: AtomicU64::new(0),
        boot_ms: now_ms(),
    });
    let app = Router::new().route("/ws", get(upgrade)).with_state(hub);
    let stop = shutdown_signal()?;
    eprintln!("tokio-relay listening on {addr}");
    // Upgraded sockets are not waited for: the runtime drops them on return.
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_767_700_800_456), "2026-01-06T12:00:00.456Z");
    }

    #[test]
    fn requests_parse_and_replies_have_the_contract_shape() {
        let join =
            r#"{"type":"join","data":{"room":"r","user":{"id":"u1","name":"U","avatar":null}}}"#;
        assert!(matches!(
            serde_json::from_str::<Incoming>(join).unwrap(),
            Incoming::Join { room, user } if room == "r" && user.id == "u1"
        ));
        assert!(matches!(
            serde_json::from_str::<Incoming>(r#"{"type":"ping"}"#).unwrap(),
            Incoming::Ping
        ));
        let user = User {
            id: "u1".into(),
            name: "U".into(),
            avatar: None,
        };
        let left = serde_json::to_string(&Outgoing::UserLeft { user_id: "u1" }).unwrap();
        assert_eq!(left, r#"{"type":"userLeft","userId":"u1"}"#);
        let list = serde_json::to_string(&Outgoing::UserList { users: vec![&user] }).unwrap();
        assert_eq!(
            list,
            r#"{"type":"userList","users":[{"id":"u1","name":"U","avatar":null}]}"#
        );
    }
}
