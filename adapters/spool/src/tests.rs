//! The spool against a fake bus that can be up, down (every delivery fails at once), hung
//! (deliveries never answer until released) or flaky (chosen records fail once).

use std::collections::HashSet;
use std::fs;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Mutex as StdMutex;

use folio_domain::topics::Topic;
use tokio::sync::Notify;

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Up,
    Down,
    Hung,
}

struct FakeBus {
    mode: StdMutex<Mode>,
    /// What the bus acknowledged, in order.
    log: StdMutex<Vec<OutgoingRecord>>,
    /// Keys whose next delivery fails once.
    flaky: StdMutex<HashSet<Vec<u8>>>,
    release: Notify,
    hung_calls: AtomicUsize,
    released: AtomicBool,
}

impl FakeBus {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(FakeBus {
            mode: StdMutex::new(mode),
            log: StdMutex::new(Vec::new()),
            flaky: StdMutex::new(HashSet::new()),
            release: Notify::new(),
            hung_calls: AtomicUsize::new(0),
            released: AtomicBool::new(false),
        })
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
        if mode != Mode::Hung {
            self.released.store(true, Ordering::SeqCst);
            self.release.notify_waiters();
        }
    }

    fn keys(&self) -> Vec<u64> {
        self.log
            .lock()
            .expect("log")
            .iter()
            .map(|r| {
                std::str::from_utf8(&r.key)
                    .expect("utf8")
                    .parse()
                    .expect("number")
            })
            .collect()
    }
}

#[async_trait]
impl RecordPublisher for FakeBus {
    async fn send(&self, _record: OutgoingRecord) -> Result<()> {
        unreachable!("the spool only delivers")
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    async fn deliver(&self, records: Vec<OutgoingRecord>) -> Vec<usize> {
        let mode = *self.mode.lock().expect("mode");
        if mode == Mode::Hung {
            self.hung_calls.fetch_add(1, Ordering::SeqCst);
            while !self.released.load(Ordering::SeqCst) {
                let wait = self.release.notified();
                if self.released.load(Ordering::SeqCst) {
                    break;
                }
                wait.await;
            }
            // A hung request ends in a failure, as a produce that timed out does.
            return (0..records.len()).collect();
        }
        if mode == Mode::Down {
            return (0..records.len()).collect();
        }
        let mut failed = Vec::new();
        let mut flaky = self.flaky.lock().expect("flaky");
        let mut log = self.log.lock().expect("log");
        for (i, r) in records.into_iter().enumerate() {
            if flaky.remove(&r.key) {
                failed.push(i);
            } else {
                log.push(r);
            }
        }
        failed
    }
}

fn record(n: u64) -> OutgoingRecord {
    OutgoingRecord {
        topic: if n % 2 == 0 {
            Topic::BookViews
        } else {
            Topic::BookDownloads
        },
        key: n.to_string().into_bytes(),
        value: format!(r#"{{"n":{n}}}"#).into_bytes(),
        headers: vec![("event_id".into(), n.to_string().into_bytes())],
    }
}

fn config(dir: &std::path::Path) -> SpoolConfig {
    SpoolConfig {
        segment_bytes: 4 * 1024,
        batch: 64,
        stall_after: Duration::from_millis(500),
        ..SpoolConfig::new(dir)
    }
}

async fn send_all(spool: &SpoolingPublisher, range: std::ops::Range<u64>) {
    for n in range {
        spool.send(record(n)).await.expect("accepted");
    }
}

fn segment_files(dir: &std::path::Path) -> usize {
    fs::read_dir(dir)
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count()
}

#[tokio::test(start_paused = true)]
async fn records_reach_the_bus_once_each_in_order_and_delivered_segments_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = FakeBus::new(Mode::Up);
    let spool = SpoolingPublisher::start(config(dir.path()), bus.clone()).expect("start");
    send_all(&spool, 0..1_000).await;
    spool.flush().await.expect("flush");
    assert_eq!(bus.keys(), (0..1_000).collect::<Vec<_>>());
    let s = spool.stats();
    assert_eq!(
        (s.accepted, s.delivered, s.pending, s.replayed),
        (1_000, 1_000, 0, 0)
    );
    assert!(!s.replaying);
    assert_eq!(spool.close(Duration::from_secs(5)).await, 0);
    // Only the (empty) open segment is left.
    assert_eq!(segment_files(dir.path()), 1);
    assert_eq!(
        fs::read_to_string(dir.path().join("cursor")).expect("cursor"),
        "1000"
    );
}

#[tokio::test(start_paused = true)]
async fn while_the_bus_is_down_sends_succeed_and_everything_is_replayed_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = FakeBus::new(Mode::Down);
    let spool = SpoolingPublisher::start(config(dir.path()), bus.clone()).expect("start");
    send_all(&spool, 0..500).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = spool.stats();
    assert!(s.replaying, "{s:?}");
    assert_eq!((s.accepted, s.delivered, s.pending), (500, 0, 500));
    assert!(s.failed_attempts > 0);
    assert!(s.bytes > 0);
    bus.set(Mode::Up);
    send_all(&spool, 500..600).await;
    spool.flush().await.expect("flush");
    assert_eq!(bus.keys(), (0..600).collect::<Vec<_>>());
    let s = spool.stats();
    assert_eq!((s.delivered, s.pending), (600, 0));
    assert!(s.replayed >= 500, "{s:?}");
    // Back on the fast path.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!spool.stats().replaying);
    send_all(&spool, 600..610).await;
    spool.flush().await.expect("flush");
    assert_eq!(bus.keys(), (0..610).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_hung_bus_is_noticed_and_nothing_waits_for_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = FakeBus::new(Mode::Hung);
    let spool = SpoolingPublisher::start(config(dir.path()), bus.clone()).expect("start");
    // Far more than the deliveries in flight can hold: every send still returns.
    send_all(&spool, 0..2_000).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(spool.stats().replaying);
    assert_eq!(bus.hung_calls.load(Ordering::SeqCst), 4);
    bus.set(Mode::Up);
    spool.flush().await.expect("flush");
    assert_eq!(bus.keys(), (0..2_000).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn records_that_fail_alone_are_retried_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = FakeBus::new(Mode::Up);
    bus.flaky.lock().expect("flaky").extend(
        (0..300)
            .filter(|n| n % 7 == 3)
            .map(|n: u64| n.to_string().into_bytes()),
    );
    let spool = SpoolingPublisher::start(config(dir.path()), bus.clone()).expect("start");
    send_all(&spool, 0..300).await;
    spool.flush().await.expect("flush");
    let mut keys = bus.keys();
    assert_eq!(keys.len(), 300, "each record acknowledged exactly once");
    keys.sort_unstable();
    assert_eq!(keys, (0..300).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_restart_replays_what_was_left_and_a_torn_tail_is_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let down = FakeBus::new(Mode::Down);
    let spool = SpoolingPublisher::start(config(dir.path()), down.clone()).expect("start");
    send_all(&spool, 0..200).await;
    assert_eq!(spool.close(Duration::from_secs(1)).await, 200);
    drop(spool);

    // Then a crash: records written, forwarder gone, and half a record at the end.
    let spool = SpoolingPublisher::start(config(dir.path()), down.clone()).expect("restart");
    send_all(&spool, 200..250).await;
    spool
        .forwarder
        .lock()
        .expect("task")
        .take()
        .expect("running")
        .abort();
    drop(spool);
    let mut last: Vec<_> = fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    last.sort();
    let last = last.pop().expect("a segment");
    let mut bytes = fs::read(&last).expect("read");
    bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
    fs::write(&last, bytes).expect("write");

    let up = FakeBus::new(Mode::Up);
    let spool = SpoolingPublisher::start(config(dir.path()), up.clone()).expect("restart");
    assert!(spool.stats().replaying);
    assert_eq!(spool.stats().pending, 250);
    send_all(&spool, 250..260).await;
    spool.flush().await.expect("flush");
    assert_eq!(up.keys(), (0..260).collect::<Vec<_>>());
    assert_eq!(spool.close(Duration::from_secs(1)).await, 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_spool_refuses_with_unavailable_and_counts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = FakeBus::new(Mode::Down);
    let cfg = SpoolConfig {
        limit_bytes: 2_000,
        ..config(dir.path())
    };
    let spool = SpoolingPublisher::start(cfg, bus.clone()).expect("start");
    let mut accepted = 0u64;
    let mut refused = 0u64;
    for n in 0..100 {
        match spool.send(record(n)).await {
            Ok(()) => accepted += 1,
            Err(Error::Unavailable(what, why)) => {
                assert_eq!(what, "event spool");
                assert!(why.starts_with("full"), "{why}");
                refused += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(accepted > 0 && refused > 0, "{accepted} {refused}");
    let s = spool.stats();
    assert_eq!((s.accepted, s.refused), (accepted, refused));
    bus.set(Mode::Up);
    spool.flush().await.expect("flush");
    assert_eq!(bus.keys(), (0..accepted).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_are_all_delivered_and_the_cursor_reaches_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = FakeBus::new(Mode::Up);
    let spool = SpoolingPublisher::start(config(dir.path()), bus.clone()).expect("start");
    let mut senders = Vec::new();
    for t in 0..4u64 {
        let spool = spool.clone();
        senders.push(tokio::spawn(async move {
            for n in 0..5_000u64 {
                spool.send(record(t * 10_000 + n)).await.expect("accepted");
                if n % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    // Many threads appending while the forwarder takes from memory: every record must be
    // acknowledged once and the cursor must reach the end, or this flush never returns.
    tokio::time::timeout(Duration::from_secs(30), spool.flush())
        .await
        .expect("flush returns")
        .expect("flush");
    let s = spool.stats();
    assert_eq!((s.accepted, s.delivered, s.pending), (20_000, 20_000, 0));
    let mut keys = bus.keys();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 20_000);
}
