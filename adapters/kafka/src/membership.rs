//! The membership state a group member's background task (KIP-848's heartbeat loop or the
//! classic join/sync/heartbeat loop) shares with `poll`, and the Kafka error codes both
//! protocols act on. Knows neither protocol.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};

use folio_domain::topics::{Topic, TopicPartition};
use tokio::sync::{oneshot, Notify};
use uuid::Uuid;

// Kafka error codes the group protocol acts on.
pub(crate) const REQUEST_TIMED_OUT: i16 = 7;
pub(crate) const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
pub(crate) const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub(crate) const NOT_COORDINATOR: i16 = 16;
pub(crate) const ILLEGAL_GENERATION: i16 = 22;
pub(crate) const UNKNOWN_MEMBER_ID: i16 = 25;
pub(crate) const REBALANCE_IN_PROGRESS: i16 = 27;
pub(crate) const UNSUPPORTED_VERSION: i16 = 35;
pub(crate) const MEMBER_ID_REQUIRED: i16 = 79;
pub(crate) const FENCED_INSTANCE_ID: i16 = 82;
pub(crate) const UNSTABLE_OFFSET_COMMIT: i16 = 88;
pub(crate) const FENCED_MEMBER_EPOCH: i16 = 110;
pub(crate) const STALE_MEMBER_EPOCH: i16 = 113;

pub(crate) fn error_name(code: i16) -> String {
    kafka_protocol::ResponseError::try_from_code(code)
        .map_or_else(|| "NONE".into(), |e| e.to_string())
}

/// Membership state shared by the heartbeat task and `poll`.
pub(crate) struct Membership {
    pub(crate) group: String,
    pub(crate) state: Mutex<MemberState>,
    /// Heartbeat -> poll: the target, the loss flag or a fatal error changed.
    pub(crate) changed: Notify,
    /// Poll -> heartbeat: the owned set changed or the member leaves.
    pub(crate) wake: Notify,
    /// Tests only: heartbeats withheld, as from a member stuck in a long pause.
    pub(crate) paused: AtomicBool,
}

pub(crate) struct MemberState {
    pub(crate) member_id: String,
    /// KIP-848: the member epoch. Classic: the generation (-1 outside one).
    pub(crate) epoch: i32,
    /// The classic protocol: commits carry the generation and `group.instance.id`, and
    /// offset fetches no member epoch.
    pub(crate) classic: Option<Classic>,
    /// The broker's latest assignment for this member; `None` until the first one.
    pub(crate) target: Option<BTreeSet<TopicPartition>>,
    /// What the worker has been given (and not had revoked): reported to the broker.
    pub(crate) owned: BTreeSet<TopicPartition>,
    /// Fenced (or silent past the session): `poll` must revoke everything before rejoining.
    pub(crate) lost: bool,
    pub(crate) fatal: Option<String>,
    pub(crate) leave: Option<oneshot::Sender<std::result::Result<(), String>>>,
    pub(crate) ids: HashMap<Uuid, Topic>,
}

/// What a classic member's commits and fetches carry besides the generation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Classic {
    pub(crate) instance_id: Option<String>,
}

impl Membership {
    /// A new member of `group` with a client-generated id (KIP-848 needs one; the classic
    /// protocol replaces it with the coordinator's).
    pub(crate) fn new(group: &str, member_id: String) -> Self {
        Membership {
            group: group.to_string(),
            state: Mutex::new(MemberState {
                member_id,
                epoch: 0,
                classic: None,
                target: None,
                owned: BTreeSet::new(),
                lost: false,
                fatal: None,
                leave: None,
                ids: HashMap::new(),
            }),
            changed: Notify::new(),
            wake: Notify::new(),
            paused: AtomicBool::new(false),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, MemberState> {
        // A panic while holding the lock leaves plain data behind; keep going with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn lose(m: &Membership) {
    let mut st = m.lock();
    st.lost = true;
    st.epoch = 0;
    st.target = None;
    drop(st);
    m.changed.notify_one();
}
