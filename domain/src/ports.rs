//! The ports: what the domain needs from the outside world, named by role. Adapters
//! implement them by technology (`SqlBookRepository`, `KafkaPublisher`, `MemoryBus`...).
//!
//! Every method returns [`crate::Error`]. Adapters translate driver failures: a unique
//! violation becomes [`Error::Duplicate`], a dropped connection [`Error::Unavailable`], and
//! anything unexpected [`Error::Internal`]. Methods that say "outbox" write the event in the
//! same transaction as the row, so the event exists exactly when the row commits.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::accounts::{AccessToken, Email, NewUser, Password, Principal, User};
use crate::analytics::Aggregate;
use crate::catalog::{
    Book, BookDraft, BookFileInfo, BookFileUpload, BookFilter, Page, PageRequest,
};
use crate::commerce::{ChargeOutcome, ConfirmOutcome, PaymentNotification, Purchase};
use crate::events::{Event, EventMeta};
use crate::feedback::{Rating, RatingUpdate, Review, ReviewText, ReviewUpdate, Stars};
use crate::ids::{BookId, PurchaseId, UserId};
use crate::money::Money;
use crate::stats::{
    BookStats, BookWindow, GenreStats, Overview, OverviewWindow, PopularBook, PopularSort,
    StoredWindow, TimeRange,
};
use crate::topics::{Topic, TopicPartition};
use crate::Result;

#[allow(unused_imports)]
use crate::Error;

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

/// The source of time. Window logic asks this, never the wall clock, so tests can advance
/// a fake clock instead of sleeping.
#[async_trait]
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
    /// Waits `d` of this clock's time. A fake clock returns once it has been advanced.
    async fn sleep(&self, d: Duration);
}

// ---------------------------------------------------------------------------------------
// Bus
// ---------------------------------------------------------------------------------------

/// A record header: name and raw value.
pub type Header = (String, Vec<u8>);

/// A record to publish. The bus picks the partition from the key with Kafka's default
/// partitioner ([`crate::partitioner`]) over the topic's real partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    pub topic: Topic,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<Header>,
}

/// A record as consumed from one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<Header>,
    /// The broker's timestamp, milliseconds since the epoch.
    pub timestamp_ms: i64,
}

/// Consecutive records of one partition, in offset order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    pub partition: TopicPartition,
    pub records: Vec<Record>,
    /// The partition's high watermark when fetched: the offset the next produced record
    /// will get. A consumer whose position reaches it has caught up.
    pub high_watermark: i64,
}

/// A committed position and the metadata stored with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub metadata: String,
}

/// A partition given to this member, with the group's committed position for it. The
/// consumer starts fetching at that offset, or at the earliest offset when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub partition: TopicPartition,
    pub committed: Option<Committed>,
}

/// A position to commit: `offset` is the next record to read; `metadata` is opaque to the
/// bus and handed back in [`Assignment::committed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    pub partition: TopicPartition,
    pub offset: i64,
    pub metadata: String,
}

/// What a [`GroupConsumer::poll`] observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerEvent {
    /// Partitions newly given to this member.
    Assigned(Vec<Assignment>),
    /// Partitions taken away. Work on them must stop; what was not committed will be
    /// replayed by their next owner.
    Revoked(Vec<TopicPartition>),
    /// Records fetched from one partition.
    Batch(RecordBatch),
    /// Nothing arrived within the wait: every assigned partition has caught up.
    Idle,
}

/// Publishes records.
///
/// `send` only enqueues: it returns once the record is buffered, waiting only while the
/// bounded buffer is full (back-pressure), and fails with [`Error::Unavailable`] if it stays
/// full past the adapter's deadline. `flush` waits until everything sent before it is
/// acknowledged by the bus (acks=all on Kafka) and fails if any of it could not be
/// delivered; callers commit their own progress only after a successful flush.
#[async_trait]
pub trait RecordPublisher: Send + Sync {
    async fn send(&self, record: OutgoingRecord) -> Result<()>;
    async fn flush(&self) -> Result<()>;
    /// Publishes `records` and waits until each one is acknowledged or has failed, then
    /// returns the indexes (ascending) of those that failed: empty when all were
    /// acknowledged. Unlike `send`, failure is reported record by record, so a caller that
    /// keeps its own copy (the bookstore's spool) retries exactly what was lost and no
    /// more. The default sends each record and flushes, so it fails all or nothing.
    async fn deliver(&self, records: Vec<OutgoingRecord>) -> Vec<usize> {
        let n = records.len();
        for r in records {
            if self.send(r).await.is_err() {
                return (0..n).collect();
            }
        }
        match self.flush().await {
            Ok(()) => Vec::new(),
            Err(_) => (0..n).collect(),
        }
    }
}

/// A member of a consumer group over a set of topics.
///
/// Partitions are assigned and revoked by the group; each has one owner at a time. After
/// [`GroupConsumer::leave`] the member is gone and its partitions go to the others.
#[async_trait]
pub trait GroupConsumer: Send {
    /// Waits up to `max_wait` for an assignment change or records. Returns
    /// [`ConsumerEvent::Idle`] when nothing happened.
    async fn poll(&mut self, max_wait: Duration) -> Result<ConsumerEvent>;
    /// Commits positions of partitions this member owns. A commit for a partition it no
    /// longer owns fails with [`Error::Conflict`] and changes nothing.
    async fn commit(&mut self, offsets: &[OffsetCommit]) -> Result<()>;
    /// Leaves the group so the partitions move at once rather than after a timeout.
    async fn leave(&mut self) -> Result<()>;
    /// The high watermark of each of `partitions`, asked of the bus now, not remembered:
    /// every record appended before this call has an offset below it. The analytics
    /// worker confirms with it that a partition has really caught up before it closes a
    /// window on idleness; what a batch or [`ConsumerEvent::Idle`] said may be stale (a
    /// paused process, a slow fetch, a broker outage). Partitions the bus cannot answer
    /// for are left out; [`Error::Unavailable`] when it cannot answer at all.
    async fn high_watermarks(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, i64)>>;
}

/// A bus: where records are published and consumer groups are joined. The composition root
/// picks one (the in-process bus or Kafka) and hands it to both roles.
#[async_trait]
pub trait MessageBus: Send + Sync {
    /// A publisher. Callers that flush and then commit should each take their own, so a
    /// delivery failure is reported to the caller whose records failed.
    fn publisher(&self) -> std::sync::Arc<dyn RecordPublisher>;
    /// Joins `group` as a new member subscribed to `topics`.
    async fn join(&self, group: &str, topics: &[Topic]) -> Result<Box<dyn GroupConsumer>>;
    /// Creates missing topics with the catalog's partition counts (a no-op in memory).
    async fn provision(&self) -> Result<()>;
    /// Whether the bus answers now: [`Error::Unavailable`] when no broker does. Readiness
    /// probes call it, so it must be cheap and must not wait past the adapter's deadline.
    async fn check(&self) -> Result<()> {
        Ok(())
    }
    /// Each consumer of this process, per partition it fetches: how far its position is
    /// behind the partition's high watermark, as the last fetch saw it.
    fn consumer_lag(&self) -> Vec<PartitionLag> {
        Vec::new()
    }
    /// The producers of this process, summed.
    fn producer_stats(&self) -> ProducerStats {
        ProducerStats::default()
    }
    /// Where `group` stands on every partition of `topics`, asked of the bus now: its
    /// committed offset and metadata (if it committed), the log start offset and the high
    /// watermark, one entry per partition, in partition order. `group` and `topics` are the
    /// names the roles use; the adapter applies its own prefixes. The group need not have a
    /// member in this process. `Ok(None)` means the bus cannot say (the default);
    /// [`Error::Unavailable`] that it can but did not answer within the adapter's deadline.
    /// [`crate::analytics::unread_records`] turns the answer into the group's lag.
    async fn group_offsets(
        &self,
        _group: &str,
        _topics: &[Topic],
    ) -> Result<Option<Vec<PartitionOffsets>>> {
        Ok(None)
    }
}

/// Where a consumer group stands on one partition ([`MessageBus::group_offsets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: TopicPartition,
    /// The group's committed offset and metadata, `None` when it never committed here.
    pub committed: Option<Committed>,
    /// The first offset still on the log.
    pub log_start: i64,
    /// The offset the next record appended will get.
    pub high_watermark: i64,
}

/// One consumer's lag on one partition: records between its position and the high
/// watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub group: String,
    pub partition: TopicPartition,
    pub lag: i64,
}

/// What the producers of a process did, summed over them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Records accepted by `send`.
    pub sent: u64,
    /// Records the bus acknowledged.
    pub acked: u64,
    /// Records that could not be delivered (their sender retries or reports them).
    pub failed: u64,
    /// Records buffered or awaiting acknowledgement now.
    pub in_flight: u64,
}

/// Publishes typed events. Handlers call it for events that have no row of their own
/// (views, downloads); it returns once the event is buffered, never waiting for the broker.
#[async_trait]
pub trait EventPublisher: Send + Sync {
    async fn publish(&self, event: &Event) -> Result<()>;
    /// Hears that an event that happened at `occurred_at` was accepted through the
    /// transactional outbox instead (its row committed; the outbox relay publishes it).
    /// Nothing is published here: it is for decorators that watch what was accepted, such
    /// as [`crate::pipeline::MarkingPublisher`]. The default ignores it.
    fn outboxed(&self, _occurred_at: DateTime<Utc>) {}
}

// ---------------------------------------------------------------------------------------
// Repositories
// ---------------------------------------------------------------------------------------

/// Users and their credentials.
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Creates a user; [`Error::Duplicate`] if the e-mail is taken.
    async fn create(&self, user: NewUser, at: DateTime<Utc>) -> Result<User>;
    async fn get(&self, id: UserId) -> Result<Option<User>>;
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>>;
    /// Ensures an ADMIN account with this e-mail and password hash exists: creates it, or
    /// promotes and re-keys the existing account. Safe when two instances start together.
    async fn ensure_admin(
        &self,
        email: &Email,
        password_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<User>;
    async fn count(&self) -> Result<u64>;
}

/// The catalog. Deleted books disappear from it but keep their history.
#[async_trait]
pub trait BookRepository: Send + Sync {
    async fn create(&self, draft: BookDraft, at: DateTime<Utc>) -> Result<Book>;
    /// A live (not deleted) book, with its file info.
    async fn get(&self, id: BookId) -> Result<Option<Book>>;
    /// Live books by id that pass `filter` ([`BookFilter::matches`]).
    async fn list(&self, page: PageRequest, filter: &BookFilter) -> Result<Page<Book>>;
    /// Replaces a live book's fields; [`Error::NotFound`] if there is none.
    async fn update(&self, id: BookId, draft: BookDraft, at: DateTime<Utc>) -> Result<Book>;
    /// Removes a book from the catalog; [`Error::NotFound`] if there is none.
    async fn delete(&self, id: BookId, at: DateTime<Utc>) -> Result<()>;
    /// The catalog's revision: a number that every committed change of a book or of its
    /// file moves (in the same transaction), seen alike by every instance on the store.
    /// The book page cache is versioned by it (`services::BookCache`).
    async fn revision(&self) -> Result<u64>;
}

/// A chunked reader of a stored file, so downloads stream instead of loading whole files.
#[async_trait]
pub trait FileChunks: Send {
    /// The next chunk, or `None` at the end.
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>>;
}

/// Book files.
#[async_trait]
pub trait BookFileStore: Send + Sync {
    /// Stores (or replaces) a book's file.
    async fn put(&self, book: BookId, upload: BookFileUpload) -> Result<BookFileInfo>;
    /// Opens a book's file for reading, or `None` if it has none.
    async fn open(&self, book: BookId) -> Result<Option<(BookFileInfo, Box<dyn FileChunks>)>>;
}

/// Purchases. At most one pending or completed purchase per (user, book).
#[async_trait]
pub trait PurchaseRepository: Send + Sync {
    /// Creates a pending purchase. [`Error::Duplicate`] if the user already has a pending
    /// or completed one for the book; a failed one is replaced.
    async fn create_pending(
        &self,
        user: UserId,
        book: BookId,
        price: Money,
        at: DateTime<Utc>,
    ) -> Result<Purchase>;
    async fn get(&self, id: PurchaseId) -> Result<Option<Purchase>>;
    async fn find(&self, user: UserId, book: BookId) -> Result<Option<Purchase>>;
    /// Completes a pending purchase and writes its `book_purchased` event (built by
    /// [`Event::purchased`] with `meta`) to the outbox, atomically. Completing a completed
    /// purchase changes nothing and answers `AlreadyCompleted`, so retried webhooks are
    /// harmless. [`Error::NotFound`] for an unknown id; [`Error::Conflict`] if it failed.
    async fn complete(
        &self,
        id: PurchaseId,
        payment_ref: &str,
        meta: EventMeta,
    ) -> Result<ConfirmOutcome>;
    /// Marks a pending purchase failed. [`Error::Conflict`] if it already completed.
    async fn fail(&self, id: PurchaseId, payment_ref: &str) -> Result<Purchase>;
}

/// Reviews. At most one per (user, book).
#[async_trait]
pub trait ReviewRepository: Send + Sync {
    /// Creates a review and its event (outbox). [`Error::Duplicate`] if one exists.
    async fn create(
        &self,
        book: BookId,
        user: UserId,
        text: &ReviewText,
        meta: EventMeta,
    ) -> Result<Review>;
    /// Replaces the user's review text and writes its event with the old length (outbox).
    /// [`Error::NotFound`] if the user has no review of the book.
    async fn update(
        &self,
        book: BookId,
        user: UserId,
        text: &ReviewText,
        meta: EventMeta,
    ) -> Result<ReviewUpdate>;
    async fn list_for_book(&self, book: BookId, page: PageRequest) -> Result<Page<Review>>;
}

/// Ratings. At most one per (user, book).
#[async_trait]
pub trait RatingRepository: Send + Sync {
    /// Creates a rating and its event (outbox). [`Error::Duplicate`] if one exists.
    async fn create(
        &self,
        book: BookId,
        user: UserId,
        stars: Stars,
        meta: EventMeta,
    ) -> Result<Rating>;
    /// Replaces the user's rating and writes its event carrying the old value (outbox),
    /// reading the old value in the same transaction. [`Error::NotFound`] if none.
    async fn update(
        &self,
        book: BookId,
        user: UserId,
        stars: Stars,
        meta: EventMeta,
    ) -> Result<RatingUpdate>;
}

/// An event waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub event: Event,
}

/// The transactional outbox's reading side, used by the relay.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Claims up to `limit` unpublished entries, oldest first, for `lease`. Entries claimed
    /// by one relay are not handed to another until the lease runs out, so several
    /// bookstore instances can each run a relay.
    async fn claim(
        &self,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxEntry>>;
    /// Marks entries published; they are never claimed again.
    async fn mark_published(&self, ids: &[i64], now: DateTime<Utc>) -> Result<()>;
    /// How many entries wait to be published.
    async fn backlog(&self) -> Result<u64>;
    /// When the oldest entry still waiting was written, if any waits (and the store can
    /// say).
    async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(None)
    }
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

/// What an upsert did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpsertReport {
    /// Aggregates stored for the first time.
    pub inserted: u64,
    /// Aggregates that replaced one covering fewer offsets.
    pub replaced: u64,
    /// Aggregates ignored because the stored one covers at least as many offsets (replays).
    pub ignored: u64,
}

/// Where aggregates are stored.
#[async_trait]
pub trait StatsSink: Send + Sync {
    /// Stores each aggregate under its key (window, book, source topic, source partition,
    /// first offset) unless the stored one already covers at least the same offsets
    /// (`next_offset` as large). Idempotent: storing the same aggregates again changes
    /// nothing. A replay of a window starts at the same first offset, so it replaces or is
    /// ignored; a different first offset is a different stretch of the log (the in-process
    /// bus after a restart), so it adds.
    async fn upsert(&self, aggregates: &[Aggregate]) -> Result<UpsertReport>;
}

/// The admin read model, derived from stored aggregates.
#[async_trait]
pub trait StatsQuery: Send + Sync {
    /// A book's statistics over the windows in `range` (all time when open).
    async fn book(&self, book: BookId, range: TimeRange) -> Result<BookStats>;
    /// A book's statistics per window, oldest first; windows without activity are absent.
    async fn book_history(&self, book: BookId, range: TimeRange) -> Result<Vec<BookWindow>>;
    async fn overview(&self, range: TimeRange) -> Result<Overview>;
    /// The overview per window, oldest first.
    async fn overview_history(&self, range: TimeRange) -> Result<Vec<OverviewWindow>>;
    /// The top `limit` books by `sort`, ties broken by lower book id.
    async fn popular(
        &self,
        sort: PopularSort,
        limit: u32,
        range: TimeRange,
    ) -> Result<Vec<PopularBook>>;
    /// Every genre with activity in `range`, ordered by [`crate::stats::rank_genres`].
    async fn genres(&self, range: TimeRange) -> Result<Vec<GenreStats>>;
    /// The stored window that ends last (per-window rows only), if any: how far the
    /// pipeline has come.
    async fn newest_window(&self) -> Result<Option<StoredWindow>>;
}

// ---------------------------------------------------------------------------------------
// Payments, credentials, readiness
// ---------------------------------------------------------------------------------------

/// A payment provider.
#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Asks the provider to charge for a pending purchase.
    async fn charge(&self, purchase: &Purchase) -> Result<ChargeOutcome>;
    /// Verifies a webhook's signature and parses its body. [`Error::Unauthenticated`] for a
    /// missing or wrong signature, [`Error::Invalid`] for a malformed body.
    fn verify_notification(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<PaymentNotification>;
}

/// Password hashing. Slow on purpose; implementations keep it off the async workers and
/// bound how many hashes run at once: [`Error::Unavailable`] when too many are waiting.
#[async_trait]
pub trait PasswordHasher: Send + Sync {
    async fn hash(&self, password: &Password) -> Result<String>;
    /// True when `password` matches `hash`; false for a wrong password or unreadable hash.
    async fn verify(&self, password: &str, hash: &str) -> Result<bool>;
    /// Does the work of a failed [`verify`](Self::verify) for a sign-in whose account does
    /// not exist, so that answer takes as long as a wrong password's and timing does not
    /// tell which accounts exist.
    async fn verify_unknown(&self, password: &str) -> Result<()>;
}

/// Signed bearer tokens with expiry.
pub trait TokenCodec: Send + Sync {
    fn issue(&self, principal: Principal, now: DateTime<Utc>) -> Result<AccessToken>;
    /// The principal of a valid, unexpired token; [`Error::Unauthenticated`] otherwise.
    fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Principal>;
}

/// A dependency that can say whether it is ready to serve.
#[async_trait]
pub trait Readiness: Send + Sync {
    /// A short name for health reports, such as `database`.
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<()>;
}
