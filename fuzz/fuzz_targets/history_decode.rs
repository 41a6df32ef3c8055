//! The restart hand-over decoder (`fdstore::decode`) on arbitrary bytes, as a
//! hostile or damaged memfd would give it: an error, or a store within the
//! limits it was given. Never a panic, never an allocation past the limits
//! (libFuzzer's `-rss_limit_mb` catches one). What decodes encodes again into
//! a snapshot that decodes to the same frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtce2ee_whisper::fdstore;
use rtce2ee_whisper::history::{History, Limits, Since};

const LIMITS: Limits = Limits {
    secs: 3600,
    room_frames: 8,
    budget: 64 * 1024,
    rooms: 4,
};

/// Every room's full replay, in activity order of the snapshot.
fn replays(h: &mut History) -> Vec<Vec<u8>> {
    let names: Vec<String> = h.snapshot(0).rooms.iter().map(|r| r.name.to_string()).collect();
    names
        .iter()
        .map(|name| {
            let key = h.key(name).expect("a room of the snapshot");
            let mut r = h.replay(key, &Since::All, 0);
            let mut out = Vec::new();
            while !h.replay_done(&mut r) {
                let batch: Vec<u8> = h.replay_frames(&r).flatten().copied().collect();
                h.replay_consume(&mut r, batch.len());
                out.extend_from_slice(&batch);
            }
            out
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(restored) = fdstore::decode(data, LIMITS, 0, 0) else {
        return;
    };
    let mut h = restored.history;
    assert!(h.bytes() <= LIMITS.budget);
    assert!(h.rooms() <= LIMITS.rooms as usize);
    assert!(rtce2ee_whisper::protocol::is_valid_id(restored.ids.prefix()));
    let snap = h.snapshot(0);
    let mut bytes = Vec::new();
    fdstore::encode(&mut bytes, &snap, &restored.ids, 0).expect("encoding into memory");
    assert_eq!(bytes.len() as u64, fdstore::encoded_len(&snap, &restored.ids));
    let mut again = fdstore::decode(&bytes, LIMITS, 0, 0)
        .expect("what was decoded encodes into a snapshot that decodes")
        .history;
    assert_eq!(
        (again.rooms(), again.frames(), again.frame_bytes()),
        (h.rooms(), h.frames(), h.frame_bytes())
    );
    assert_eq!(replays(&mut again), replays(&mut h));
});
