use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::rc::Rc;

use super::*;
use crate::history::Since;
use crate::history::tests::{framed, limits};
use crate::systemd::{Inherited, classify, parse_listen_env, receive_with_fds, send_fd_datagram};

const SEC: u64 = 1000;

fn roomy() -> Limits {
    limits(3600, 64, 64 << 20, 16)
}

fn message(id: &str, size: usize) -> Rc<[u8]> {
    framed(&format!(
        r#"{{"type":"message","id":"{id}","user":{{"id":"u1","name":"Ann","avatar":null}},"content":"{}","timestamp":"2026-01-06T12:00:00.123Z"}}"#,
        "QUFB".repeat(size.div_ceil(4).max(1))
    ))
}

fn reaction(to: &str) -> Rc<[u8]> {
    framed(&format!(
        r#"{{"type":"reaction","messageId":"{to}","user":{{"id":"u2","name":"Bo"}},"emoji":"🎉"}}"#
    ))
}

/// Three rooms (one empty, one incomplete), reactions, and an eviction.
fn sample() -> (History, MessageIds) {
    let mut h = History::new(limits(3600, 3, 64 << 20, 3));
    let gone = h.enable("gone", 0).unwrap();
    h.retain(gone, &message("g-1", 10), 0);
    let a = h.enable("a", 0).unwrap();
    let b = h.enable("b-room_2", 0).unwrap();
    h.retain(a, &message("p-1", 10), SEC);
    h.retain(b, &message("p-2", 300), 2 * SEC);
    h.retain(a, &reaction("p-1"), 3 * SEC);
    for i in 3..=6 {
        h.retain(b, &message(&format!("p-{i}"), 20), 4 * SEC);
    }
    h.enable("empty", 5 * SEC).unwrap();
    let mut ids = MessageIds::new(None);
    for _ in 0..6 {
        ids.next_seq();
    }
    (h, ids)
}

fn encoded(h: &History, ids: &MessageIds, now_ms: u64, unix_ms: u64) -> Vec<u8> {
    let snap = h.snapshot(now_ms);
    let mut out = Vec::new();
    encode(&mut out, &snap, ids, unix_ms).unwrap();
    assert_eq!(out.len() as u64, encoded_len(&snap, ids));
    out
}

/// Every room's full replay: (ids or r:targets, complete).
fn contents(h: &mut History, now_ms: u64) -> Vec<(String, Vec<u8>, bool)> {
    let mut rooms: Vec<String> = ["gone", "a", "b-room_2", "empty"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    rooms.retain(|r| h.key(r).is_some());
    rooms
        .into_iter()
        .map(|room| {
            let key = h.key(&room).unwrap();
            let mut r = h.replay(key, &Since::All, now_ms);
            let mut bytes = Vec::new();
            while !h.replay_done(&mut r) {
                let batch: Vec<u8> = h.replay_frames(&r).flatten().copied().collect();
                h.replay_consume(&mut r, batch.len());
                bytes.extend_from_slice(&batch);
            }
            (room, bytes, r.complete())
        })
        .collect()
}

#[test]
fn encode_decode_round_trip() {
    let (mut h, ids) = sample();
    let bytes = encoded(&h, &ids, 5 * SEC, 1_700_000_000_000);
    assert_eq!(&bytes[..8], b"WHSPHIST");
    // A new process: its clock starts at 0, the wall clock moved 2 s on.
    let mut back = decode(&bytes, *h.limits(), 0, 1_700_000_002_000).unwrap();
    // Encoding what was decoded gives the same length (ages aside, the same).
    let again = encoded(&back.history, &ids, 3 * SEC, 1_700_000_000_000);
    assert_eq!(again.len(), bytes.len());
    assert_eq!(contents(&mut back.history, 0), contents(&mut h, 5 * SEC));
    assert_eq!(
        (
            back.history.frames(),
            back.history.bytes(),
            back.history.rooms()
        ),
        (h.frames(), h.bytes(), h.rooms())
    );
    let a = contents(&mut back.history, 0);
    assert_eq!(
        a.iter().map(|r| r.2).collect::<Vec<_>>(),
        [true, false, true]
    );
    // The evicted room is remembered: back, it is not complete.
    let k = back.history.enable("gone", 0).unwrap();
    let r = back.history.replay(k, &Since::All, 0);
    assert!(!r.complete());
    // A since id from before the restart is found.
    let k = back.history.key("b-room_2").unwrap();
    let r = back.history.replay(k, &Since::from_text("p-5").unwrap(), 0);
    assert!(r.complete());
    assert_eq!(back.history.replay_frames(&r).count(), 1);
    // Ids go on with a different prefix.
    assert_ne!(back.ids.prefix(), ids.prefix());
}

#[test]
fn frames_age_by_the_wall_clock_gap_and_limits_apply() {
    let (h, ids) = sample();
    let bytes = encoded(&h, &ids, 5 * SEC, 1_000_000);
    // An hour later everything written before has expired (HISTORY_SECS 3600).
    let back = decode(&bytes, *h.limits(), 0, 1_000_000 + 3600 * SEC).unwrap();
    assert_eq!(back.history.frames(), 0);
    assert_eq!(back.history.rooms(), 3, "rooms outlive their frames");
    // A clock that went back ages nothing.
    let back = decode(&bytes, *h.limits(), 0, 0).unwrap();
    assert_eq!(back.history.frames(), h.frames());
    // Smaller limits: one room, the most active.
    let back = decode(&bytes, limits(3600, 3, 64 << 20, 1), 0, 1_000_000).unwrap();
    assert_eq!(back.history.rooms(), 1);
    assert!(back.history.key("empty").is_some());
    // History off: nothing.
    let back = decode(&bytes, limits(0, 3, 64 << 20, 1), 0, 1_000_000).unwrap();
    assert_eq!((back.history.rooms(), back.history.frames()), (0, 0));
}

/// Patches the declared length to the buffer's.
fn relength(mut b: Vec<u8>) -> Vec<u8> {
    let len = (b.len() as u64).to_le_bytes();
    b[12..20].copy_from_slice(&len);
    b
}

#[test]
fn hostile_snapshots_are_refused_without_panicking() {
    let (h, ids) = sample();
    let good = encoded(&h, &ids, 5 * SEC, 1_000_000);
    let l = *h.limits();
    let dec = |b: &[u8]| decode(b, l, 0, 1_000_000).err();
    assert_eq!(dec(&[]), Some(DecodeError::Truncated("header")));
    assert_eq!(dec(b"WHSPHISX"), Some(DecodeError::Magic));
    let mut v2 = good.clone();
    v2[8] = 2;
    assert_eq!(dec(&v2), Some(DecodeError::Version(2)));
    // Every truncation is refused (by its declared length).
    for cut in 0..good.len() {
        assert!(dec(&good[..cut]).is_some(), "cut at {cut}");
        // ... and also when the length is patched to match.
        if cut >= 20 {
            assert!(
                dec(&relength(good[..cut].to_vec())).is_some(),
                "cut at {cut}"
            );
        }
    }
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(dec(&long), Some(DecodeError::Length { .. })));
    assert_eq!(dec(&relength(long)), Some(DecodeError::Trailing));
    // A frame whose JSON is broken, a byte at a time over the last frame.
    let last = message("p-6", 20);
    let start = good.len() - last.len();
    for i in start..good.len() {
        let mut bad = good.clone();
        bad[i] = b'\\';
        assert!(dec(&bad).is_some(), "byte {i}");
    }
    // Random damage anywhere: an error or a valid store, never a panic.
    let mut seed = 0x1234_5678_9abc_def1u64;
    for _ in 0..3000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut bad = good.clone();
        let at = (seed % bad.len() as u64) as usize;
        bad[at] ^= (seed >> 32) as u8 | 1;
        if let Ok(r) = decode(&bad, l, 0, 1_000_000) {
            r.history.check_invariants();
        }
    }
}

/// Builds a snapshot by hand: header, ids, flags, tombstones, then `rest`.
fn handmade(rest: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.push(0); // empty prefix
    b.extend_from_slice(&0u64.to_le_bytes());
    b.push(0); // flags
    b.extend_from_slice(rest);
    relength(b)
}

fn room(name: &str, complete: u8) -> Vec<u8> {
    let mut b = vec![name.len() as u8];
    b.extend_from_slice(name.as_bytes());
    b.push(complete);
    b
}

fn frame(room: u32, age: u64, f: &[u8]) -> Vec<u8> {
    let mut b = room.to_le_bytes().to_vec();
    b.extend_from_slice(&age.to_le_bytes());
    b.extend_from_slice(&(f.len() as u32).to_le_bytes());
    b.extend_from_slice(f);
    b
}

#[test]
fn every_field_is_checked() {
    let l = roomy();
    let dec = |b: &[u8]| decode(b, l, 0, 0).err();
    let m = message("x-1", 8);
    let one = |name: &str, flags: u8, frames: &[Vec<u8>]| {
        let mut rest = 0u32.to_le_bytes().to_vec();
        rest.extend_from_slice(&1u32.to_le_bytes());
        rest.extend_from_slice(&room(name, flags));
        rest.extend_from_slice(&(frames.len() as u32).to_le_bytes());
        for f in frames {
            rest.extend_from_slice(f);
        }
        handmade(&rest)
    };
    assert_eq!(dec(&one("r", 1, &[frame(0, 5, &m)])), None);
    assert_eq!(
        dec(&one("bad name", 1, &[])),
        Some(DecodeError::Malformed("room name"))
    );
    assert_eq!(
        dec(&one("r", 2, &[])),
        Some(DecodeError::Malformed("room flags"))
    );
    assert_eq!(
        dec(&one("r", 1, &[frame(1, 5, &m)])),
        Some(DecodeError::Malformed("frame room"))
    );
    assert_eq!(
        dec(&one("r", 1, &[frame(0, 5, &m), frame(0, 6, &m)])),
        Some(DecodeError::Malformed("frame order"))
    );
    let typing = framed(r#"{"type":"userTyping","user":{"id":"u","name":"n"},"isTyping":true}"#);
    assert_eq!(
        dec(&one("r", 1, &[frame(0, 5, &typing)])),
        Some(DecodeError::Frame(0))
    );
    let mut masked = m.to_vec();
    masked[1] |= 0x80;
    assert_eq!(
        dec(&one("r", 1, &[frame(0, 5, &masked)])),
        Some(DecodeError::Frame(0))
    );
    // Two rooms of one name.
    let mut rest = 0u32.to_le_bytes().to_vec();
    rest.extend_from_slice(&2u32.to_le_bytes());
    rest.extend_from_slice(&room("r", 1));
    rest.extend_from_slice(&room("r", 1));
    rest.extend_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        dec(&handmade(&rest)),
        Some(DecodeError::Malformed(_))
    ));
    // Counts larger than the input could hold are refused before any work.
    for (tombs, rooms) in [(u32::MAX, 0), (0, u32::MAX)] {
        let mut rest = tombs.to_le_bytes().to_vec();
        rest.extend_from_slice(&rooms.to_le_bytes());
        assert!(matches!(
            dec(&handmade(&rest)),
            Some(DecodeError::Truncated(_))
        ));
    }
    let mut rest = 0u32.to_le_bytes().to_vec();
    rest.extend_from_slice(&0u32.to_le_bytes());
    rest.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        dec(&handmade(&rest)),
        Some(DecodeError::Truncated("frames"))
    );
    // A frame length past FRAME_MAX.
    let mut f = frame(0, 5, &m);
    f[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(dec(&one("r", 1, &[f])), Some(DecodeError::Frame(0)));
    // Flags and prefix.
    let mut b = handmade(&[0; 12]);
    b[37] = 2;
    assert_eq!(dec(&b), Some(DecodeError::Malformed("flags")));
    b[37] = 1; // evicted rooms forgotten: a new room is not complete
    let mut r = decode(&b, l, 0, 0).unwrap().history;
    let k = r.enable("new", 0).unwrap();
    assert!(!r.replay(k, &Since::All, 0).complete());
    let mut b = handmade(&[0; 12]);
    b[28] = 3; // a prefix running into the rest
    b.splice(29..29, *b"a b");
    assert_eq!(
        dec(&relength(b)),
        Some(DecodeError::Malformed("message-id prefix"))
    );
    // The errors name no content.
    let text = DecodeError::Frame(3).to_string();
    assert!(!text.contains("x-1"));
}

#[test]
fn a_sealed_memfd_holds_the_snapshot_and_cannot_change() {
    let (mut h, ids) = sample();
    let fd = write_memfd(&h.snapshot(5 * SEC), &ids, 1_000_000).unwrap();
    let seals = SealFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GET_SEALS).unwrap());
    assert!(seals.contains(immutable()), "{seals:?}");
    // Neither written, grown, shrunk, nor unsealed.
    let mut file = std::fs::File::from(fd.try_clone().unwrap());
    assert!(file.write_all(b"x").is_err());
    assert!(file.set_len(1).is_err());
    assert!(file.set_len(1 << 20).is_err());
    assert!(fcntl(&fd, FcntlArg::F_ADD_SEALS(SealFlag::empty())).is_err());
    // What it holds is what encode writes (but for the wall clock: same here).
    let data = map_sealed(&fd).unwrap();
    assert_eq!(&data[..], &encoded(&h, &ids, 5 * SEC, 1_000_000)[..]);
    let mut back = decode(&data, *h.limits(), 0, 1_000_000).unwrap();
    assert_eq!(contents(&mut back.history, 0), contents(&mut h, 5 * SEC));
}

#[test]
fn only_a_sealed_nonempty_memfd_is_mapped() {
    let plain = memfd_create(c"t", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    std::fs::File::from(plain.try_clone().unwrap())
        .write_all(b"WHSPHIST")
        .unwrap();
    assert!(map_sealed(&plain).is_err(), "not sealed");
    fcntl(&plain, FcntlArg::F_ADD_SEALS(immutable())).unwrap();
    assert_eq!(&map_sealed(&plain).unwrap()[..], b"WHSPHIST");
    let empty = memfd_create(c"t", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    fcntl(&empty, FcntlArg::F_ADD_SEALS(immutable())).unwrap();
    assert!(map_sealed(&empty).is_err(), "empty");
    let (a, _b) = UnixDatagram::pair().unwrap();
    assert!(map_sealed(&a).is_err(), "a socket");
}

#[test]
fn the_memfd_crosses_a_socket_with_scm_rights() {
    let (h, ids) = sample();
    let fd = write_memfd(&h.snapshot(5 * SEC), &ids, 1_000_000).unwrap();
    let (a, b) = UnixDatagram::pair().unwrap();
    send_fd_datagram(a.as_fd(), None, b"FDSTORE=1\nFDNAME=history", fd.as_fd()).unwrap();
    drop(fd);
    let (text, fds) = receive_with_fds(&b).unwrap();
    assert_eq!(text, "FDSTORE=1\nFDNAME=history");
    assert_eq!(fds.len(), 1);
    let back = decode(&map_sealed(&fds[0]).unwrap(), *h.limits(), 0, 1_000_000).unwrap();
    assert_eq!(back.history.frames(), h.frames());
}

/// A datagram socket bound where a `NOTIFY_SOCKET` would name it.
fn fake_systemd(tag: &str) -> (UnixDatagram, Notifier) {
    let name = format!("rtce2ee-whisper-test-{}-{tag}", std::process::id());
    let addr =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    (sock, Notifier::to_socket(&format!("@{name}")))
}

#[test]
fn hand_over_and_take_back_through_an_emulated_notify_socket() {
    let (mut h, ids) = sample();
    let (systemd, notifier) = fake_systemd("handover");
    assert!(hand_over(&h, &ids, &notifier).unwrap());
    let (first, none) = receive_with_fds(&systemd).unwrap();
    assert_eq!(
        (first.as_str(), none.len()),
        ("FDSTOREREMOVE=1\nFDNAME=history", 0)
    );
    let (second, mut fds) = receive_with_fds(&systemd).unwrap();
    assert_eq!(second, "FDSTORE=1\nFDNAME=history\nFDPOLL=0");
    assert_eq!(fds.len(), 1);
    // The next start: the fd comes back; it is removed from the store.
    let back = take_back(fds.pop(), *h.limits(), &notifier);
    let (third, _) = receive_with_fds(&systemd).unwrap();
    assert_eq!(third, "FDSTOREREMOVE=1\nFDNAME=history");
    let mut history = back.history;
    assert_eq!(history.frames(), h.frames());
    let mine: Vec<_> = contents(&mut h, 5 * SEC).into_iter().map(|r| r.1).collect();
    let theirs: Vec<_> = contents(&mut history, 0).into_iter().map(|r| r.1).collect();
    assert_eq!(mine, theirs, "replays identical byte for byte");
    assert_ne!(back.ids.prefix(), ids.prefix());
}

#[test]
fn nothing_is_handed_over_without_systemd_or_history() {
    let (h, ids) = sample();
    assert!(!hand_over(&h, &ids, &Notifier::to_socket("")).unwrap());
    // A manager that cannot be reached is reported.
    assert!(hand_over(&h, &ids, &Notifier::to_socket("/nonexistent/dir/sock")).is_err());
    let (_systemd, notifier) = fake_systemd("empty");
    let empty = History::new(roomy());
    assert!(!hand_over(&empty, &ids, &notifier).unwrap());
    let off = History::new(limits(0, 1, 1 << 20, 1));
    assert!(!hand_over(&off, &ids, &notifier).unwrap());
}

#[test]
fn a_bad_memfd_gives_an_empty_history() {
    let (systemd, notifier) = fake_systemd("bad");
    let fd = memfd_create(c"t", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    std::fs::File::from(fd.try_clone().unwrap())
        .write_all(b"WHSPHIST\x02\0\0\0garbage")
        .unwrap();
    fcntl(&fd, FcntlArg::F_ADD_SEALS(immutable())).unwrap();
    let back = take_back(Some(fd), roomy(), &notifier);
    assert_eq!((back.history.rooms(), back.history.frames()), (0, 0));
    // Still removed from the store.
    let (text, _) = receive_with_fds(&systemd).unwrap();
    assert_eq!(text, "FDSTOREREMOVE=1\nFDNAME=history");
    // No fd at all: empty, nothing sent.
    let back = take_back(None, roomy(), &notifier);
    assert_eq!(back.history.rooms(), 0);
}

// ------------------------------------------------------- passed descriptors

#[test]
fn listen_env_is_parsed_with_names() {
    let p = |pid, fds, names| parse_listen_env(pid, fds, names, 42);
    let named = |v: &[(i32, Option<&str>)]| -> Vec<(i32, Option<String>)> {
        v.iter().map(|(f, n)| (*f, n.map(str::to_string))).collect()
    };
    assert_eq!(
        p(
            Some("42"),
            Some("2"),
            Some("rtce2ee-whisper.socket:history")
        ),
        named(&[(3, Some("rtce2ee-whisper.socket")), (4, Some("history"))])
    );
    assert_eq!(
        p(Some("42"), Some("1"), Some("history")),
        named(&[(3, Some("history"))])
    );
    // No names, fewer names, empty names.
    assert_eq!(
        p(Some("42"), Some("2"), None),
        named(&[(3, None), (4, None)])
    );
    assert_eq!(
        p(Some("42"), Some("3"), Some("a::")),
        named(&[(3, Some("a")), (4, None), (5, None)])
    );
    // Not for us, or nonsense.
    assert!(p(Some("41"), Some("1"), None).is_empty());
    assert!(p(None, Some("1"), None).is_empty());
    assert!(p(Some("42"), Some("x"), None).is_empty());
    assert!(p(Some("42"), Some("0"), None).is_empty());
    assert_eq!(p(Some("42"), Some("100000"), None).len(), 64);
}

fn memfd_named(name: &str) -> (OwnedFd, Option<String>) {
    let (h, ids) = sample();
    (
        write_memfd(&h.snapshot(0), &ids, 0).unwrap(),
        Some(name.to_string()),
    )
}

fn listener() -> (OwnedFd, Option<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (l.into(), Some("rtce2ee-whisper.socket".into()))
}

#[test]
fn a_listener_and_the_memfd_are_told_apart() {
    let Inherited {
        listener: l,
        history,
    } = classify(vec![memfd_named("history"), listener()]);
    let l = l.expect("the listener");
    let port = l.local_addr().unwrap().port();
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let fd = history.expect("the memfd");
    let back = decode(&map_sealed(&fd).unwrap(), roomy(), 0, 0).unwrap();
    assert!(back.history.frames() > 0);
}

#[test]
fn the_memfd_alone_leaves_the_relay_to_bind() {
    let got = classify(vec![memfd_named("history")]);
    assert!(got.listener.is_none());
    assert!(got.history.is_some());
    // Nothing at all.
    let got = classify(Vec::new());
    assert!(got.listener.is_none() && got.history.is_none());
}

#[test]
fn descriptors_that_fit_nothing_are_closed() {
    // A memfd under another name, a UDP socket, a pipe, a connected TCP
    // socket and a second listener: none is taken; the pipe's write end is
    // closed (its reader sees the end), the first listener wins.
    let (pipe_r, pipe_w) = nix::unistd::pipe().unwrap();
    let mut pipe_r = std::fs::File::from(pipe_r);
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (first, _) = listener();
    let first_port = std::net::TcpListener::from(first.try_clone().unwrap())
        .local_addr()
        .unwrap()
        .port();
    let client = std::net::TcpStream::connect(("127.0.0.1", first_port)).unwrap();
    let got = classify(vec![
        memfd_named("other"),
        (udp.into(), Some("history".into())),
        (pipe_w, Some("history".into())),
        (client.into(), None),
        (first, Some("history".into())),
        listener(),
    ]);
    assert!(got.history.is_none());
    let l = got.listener.unwrap();
    assert_eq!(l.local_addr().unwrap().port(), first_port);
    let mut buf = [0u8; 1];
    assert_eq!(
        pipe_r.read(&mut buf).unwrap(),
        0,
        "the write end was closed"
    );
    let flags = fcntl(l.as_fd(), FcntlArg::F_GETFD).unwrap();
    assert_ne!(flags & nix::libc::FD_CLOEXEC, 0);
}
