//! Fuzzing the control-socket protocol (proptest): arbitrary bytes and
//! hostile length prefixes never panic the frame reader, never allocate
//! past the frame cap, and every payload decodes to a message or an error.
//! Case counts are bounded (PROPTEST_CASES overrides) so this runs in
//! seconds under `cargo nextest`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pinacle_supervisor::protocol::{
    read_frame, write_frame, Control, ExecSpec, ExitStatus, FrameKind, Op, ProtocolError, Request, Response, MAX_FRAME,
};
use proptest::prelude::*;

/// Records the largest single allocation and the peak of live bytes of
/// this thread while `TRACK` is on.
struct Counting;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn count(delta: isize, size: usize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
            let _ = LIVE.try_with(|l| {
                let now = l.get() + delta;
                l.set(now);
                let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
            });
        }
    });
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize, layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize, layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize), 0);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as isize - layout.size() as isize, new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// (largest single allocation, peak live bytes) while `f` ran.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, isize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    LARGEST.with(|l| l.set(0));
    TRACK.with(|t| t.set(true));
    let out = f();
    TRACK.with(|t| t.set(false));
    (out, LARGEST.with(Cell::get), PEAK.with(Cell::get))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

/// Reads frames from `bytes` until the end or an error, decoding each
/// payload as every message type the two sides read. The frames read.
fn read_all(rt: &tokio::runtime::Runtime, bytes: &[u8]) -> Vec<(FrameKind, usize)> {
    rt.block_on(async {
        let mut r = bytes;
        let mut frames = Vec::new();
        loop {
            match read_frame(&mut r).await {
                Ok(Some((kind, payload))) => {
                    assert!(payload.len() <= MAX_FRAME);
                    let _ = serde_json::from_slice::<Request>(&payload);
                    let _ = serde_json::from_slice::<Response>(&payload);
                    let _ = serde_json::from_slice::<Control>(&payload);
                    let _ = serde_json::from_slice::<ExitStatus>(&payload);
                    frames.push((kind, payload.len()));
                }
                Ok(None) => break,
                Err(ProtocolError::TooLarge(n)) => {
                    assert!(n > MAX_FRAME);
                    break;
                }
                Err(_) => break,
            }
        }
        frames
    })
}

/// A frame as a hostile peer might write it: any kind byte, a declared
/// length (often a lie) and some bytes.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let declared = prop_oneof![
        0u32..64,
        Just(MAX_FRAME as u32),
        Just(MAX_FRAME as u32 + 1),
        Just(u32::MAX),
        any::<u32>(),
    ];
    let payload = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        prop::sample::select(vec![
            r#"{"secret":"s","op":"ping"}"#,
            r#"{"secret":"s","op":"exec","argv":["sh","-c","id"],"pty":{"rows":24,"cols":80}}"#,
            r#"{"secret":"s","op":"logs","process":"app","tail_bytes":18446744073709551615}"#,
            r#"{"secret":"s","op":"read_file","path":"/etc/passwd"}"#,
            r#"{"resize":{"rows":65535,"cols":0}}"#,
            r#"{"signal":-9}"#,
            r#"{"code":1,"signal":null}"#,
            r#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["#,
            r#"{"secret":"s","op":"exec","argv":[],"env":{"A":"B"},"cwd":"\u0000"}"#,
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    (any::<u8>(), declared, payload, any::<bool>()).prop_map(|(kind, declared, payload, honest)| {
        let kind = kind % 12;
        let len = if honest { payload.len() as u32 } else { declared };
        let mut out = vec![kind];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&payload);
        out
    })
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// The most one read may allocate: one frame at the cap, plus what serde
/// builds from a payload that size.
const PEAK_BOUND: isize = 4 * MAX_FRAME as isize;

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_or_allocate_past_the_cap(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let rt = runtime();
        let (_, largest, peak) = measure(|| read_all(&rt, &bytes));
        prop_assert!(largest <= MAX_FRAME, "one allocation of {largest} bytes");
        prop_assert!(peak <= PEAK_BOUND, "{peak} bytes live at once");
    }

    #[test]
    fn hostile_frame_sequences_never_panic_or_allocate_past_the_cap(frames in prop::collection::vec(frame(), 1..8)) {
        let bytes: Vec<u8> = frames.concat();
        let rt = runtime();
        let (read, largest, peak) = measure(|| read_all(&rt, &bytes));
        prop_assert!(largest <= MAX_FRAME, "one allocation of {largest} bytes");
        prop_assert!(peak <= PEAK_BOUND, "{peak} bytes live at once");
        // what was read is what was framed, in order, up to the first bad frame
        let mut at = 0;
        for (kind, len) in read {
            prop_assert_eq!(bytes[at], kind as u8);
            prop_assert_eq!(u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize, len);
            at += 5 + len;
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn written_frames_read_back(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..2048), 0..6), kind in 1u8..10) {
        let rt = runtime();
        let kind = [FrameKind::Request, FrameKind::Response, FrameKind::Stdin, FrameKind::StdinEnd, FrameKind::Control, FrameKind::Stdout, FrameKind::Stderr, FrameKind::Exit, FrameKind::End][kind as usize - 1];
        let mut wire = Vec::new();
        rt.block_on(async {
            for p in &payloads {
                write_frame(&mut wire, kind, p).await.unwrap();
            }
        });
        let read = rt.block_on(async {
            let mut r = wire.as_slice();
            let mut out = Vec::new();
            while let Some((k, p)) = read_frame(&mut r).await.unwrap() {
                out.push((k, p));
            }
            out
        });
        prop_assert_eq!(read.len(), payloads.len());
        for ((k, p), want) in read.iter().zip(&payloads) {
            prop_assert_eq!(*k, kind);
            prop_assert_eq!(p, want);
        }
    }

    #[test]
    fn requests_round_trip_through_json(argv in prop::collection::vec("[ -~]{0,12}", 0..6), secret in "[ -~]{0,40}") {
        let req = Request { secret, op: Op::Exec(ExecSpec { argv, ..Default::default() }) };
        let bytes = serde_json::to_vec(&req).unwrap();
        let back: Request = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(back.op, req.op);
        prop_assert_eq!(back.secret, req.secret);
    }
}

#[test]
fn a_lying_length_prefix_is_refused_before_any_allocation() {
    let rt = runtime();
    for len in [MAX_FRAME as u32 + 1, u32::MAX] {
        let mut bytes = vec![FrameKind::Stdin as u8];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(b"short");
        let (r, largest, _) = measure(|| rt.block_on(async { read_frame(&mut bytes.as_slice()).await }));
        assert!(matches!(r, Err(ProtocolError::TooLarge(n)) if n == len as usize), "{r:?}");
        assert!(largest < 4096, "{largest}");
    }
    // at the cap: one allocation of the cap, then a clean error for the missing bytes
    let mut bytes = vec![FrameKind::Stdin as u8];
    bytes.extend_from_slice(&(MAX_FRAME as u32).to_be_bytes());
    let (r, largest, _) = measure(|| rt.block_on(async { read_frame(&mut bytes.as_slice()).await }));
    assert!(matches!(r, Err(ProtocolError::Io(_))), "{r:?}");
    assert_eq!(largest, MAX_FRAME);
}
