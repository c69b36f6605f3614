//! folio over a real broker and PostgreSQL, one part at a time: a bookstore and any number
//! of analytics instances, each with its own Kafka client as separate processes would
//! have, so a test can stop, kill and restart them. The stored statistics are read from
//! the database the bookstore writes, and compared with [`Traffic`]'s exact figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use folio_domain::analytics::{StopFlag, WindowSpec, WorkerStats};
use folio_domain::ids::BookId;
use folio_domain::ports::{MessageBus, RecordPublisher, StatsQuery};
use folio_domain::stats::TimeRange;
use folio_domain::topics::Topic;
use folio_kafka::{KafkaBus, KafkaConfig};
use folio_memory::SystemClock;
use folio_runtime::analytics::GROUP as ANALYTICS_GROUP;
use folio_runtime::bookstore::{
    BookstoreArgs, Payments, Retention, RunningBookstore, Starter, GROUP as BOOKSTORE_GROUP,
};
use folio_sql::SqlStore;
use tokio::task::JoinHandle;

use crate::bus_contract::partitions_of;
use crate::kafka_env::{KafkaEnv, PgEnv};
use crate::traffic::{Expected, Traffic};

/// One test's folio: its own topics, groups and schema.
pub struct Stack {
    pub cfg: KafkaConfig,
    pub spec: WindowSpec,
    pub database_url: String,
    /// The bookstore's database, read directly for exact figures.
    pub store: SqlStore,
    bookstore: Option<RunningBookstore>,
    /// The bookstore's folder (its event spool), kept across its restarts.
    data_dir: tempfile::TempDir,
}

/// An analytics instance (`folio_runtime::analytics::run`) on its own Kafka client.
pub struct Analytics {
    stop: StopFlag,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    pub stats: Arc<WorkerStats>,
}

impl Analytics {
    /// Stops cleanly: publishes what it has, commits and leaves the group.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.stop();
        match self.task.take() {
            Some(t) => t.await.context("the analytics task")?,
            None => Ok(()),
        }
    }

    /// Ends it the way `kill -9` would: the task and its Kafka client are dropped on the
    /// spot, nothing is flushed or committed, and the group is not told.
    pub async fn kill(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    pub fn counted(&self) -> u64 {
        WorkerStats::get(&self.stats.counted)
    }
}

impl Drop for Analytics {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Stack {
    /// Provisions the topics, opens a fresh schema and starts the bookstore (no analytics).
    pub async fn start(
        kafka: &KafkaEnv,
        pg: &PgEnv,
        test: &str,
        window: Duration,
        grace: Duration,
    ) -> anyhow::Result<Self> {
        let cfg = kafka.config(test);
        KafkaBus::connect(cfg.clone())
            .await?
            .provision()
            .await
            .context("provisioning topics")?;
        let database_url = pg.fresh_schema().await?;
        let store = folio_sql::connect(&database_url).await?;
        let mut stack = Stack {
            cfg,
            spec: WindowSpec::new(window, grace)?,
            database_url,
            store,
            bookstore: None,
            data_dir: tempfile::tempdir()?,
        };
        stack.start_bookstore().await?;
        Ok(stack)
    }

    /// A new connection to the broker, as a new process would open.
    pub async fn bus(&self) -> anyhow::Result<Arc<dyn MessageBus>> {
        Ok(Arc::new(KafkaBus::connect(self.cfg.clone()).await?))
    }

    /// A producer for the test's own events.
    pub async fn publisher(&self) -> anyhow::Result<Arc<dyn RecordPublisher>> {
        Ok(self.bus().await?.publisher())
    }

    /// Starts the bookstore role (HTTP, outbox relay, statistics ingest).
    pub async fn start_bookstore(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.bookstore.is_none(), "the bookstore runs already");
        let args = BookstoreArgs {
            database_url: self.database_url.clone(),
            http_addr: "127.0.0.1:0".into(),
            drain_timeout: std::time::Duration::from_secs(10),
            admin_email: crate::app::ADMIN_EMAIL.into(),
            admin_password: Some(crate::app::ADMIN_PASSWORD.into()),
            token_secret: Some("test-token-secret-of-some-length".into()),
            webhook_secret: Some("test-webhook-secret".into()),
            payments: Payments::Immediate,
            currency: "USD".into(),
            stats_retention: Retention::default(),
            data_dir: self.data_dir.path().to_path_buf(),
            spool_limit: folio_spool::DEFAULT_LIMIT_BYTES,
            book_cache_refresh: folio_domain::services::DEFAULT_BOOK_PAGE_REFRESH,
        };
        let bus = self.bus().await?;
        self.bookstore = Some(Starter::start(&args, bus, Arc::new(SystemClock), None).await?);
        Ok(())
    }

    /// Stops the bookstore cleanly (drains, commits, leaves its group).
    pub async fn stop_bookstore(&mut self) -> anyhow::Result<()> {
        match self.bookstore.take() {
            Some(b) => b.stop().await,
            None => Ok(()),
        }
    }

    /// The bookstore's Prometheus counter `name`.
    pub async fn bookstore_metric(&self, name: &str) -> anyhow::Result<u64> {
        let b = self
            .bookstore
            .as_ref()
            .context("the bookstore is stopped")?;
        let text = reqwest::get(format!("http://{}/metrics", b.http_addr))
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .with_context(|| format!("no {name} in /metrics"))?
            .trim()
            .parse()
            .with_context(|| format!("{name} in /metrics"))
    }

    /// Starts an analytics instance and waits until it has joined the group.
    pub async fn analytics(&self) -> anyhow::Result<Analytics> {
        let bus = self.bus().await?;
        let stop = StopFlag::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut task = tokio::spawn(folio_runtime::analytics::run(
            bus,
            Arc::new(SystemClock),
            self.spec,
            stop.clone(),
            Some(tx),
        ));
        let stats = match rx.await {
            Ok(s) => s,
            Err(_) => {
                let ended = (&mut task).await;
                bail!("the analytics instance ended before running: {ended:?}");
            }
        };
        Ok(Analytics {
            stop,
            task: Some(task),
            stats,
        })
    }

    /// The figures stored now, in the shape of [`Expected`] for the books `expected` names.
    pub async fn stored(&self, expected: &Expected) -> anyhow::Result<Expected> {
        let overview = self.store.overview(TimeRange::ALL).await?;
        let mut books = std::collections::BTreeMap::new();
        for &id in expected.books.keys() {
            let b = self.store.book(BookId(id), TimeRange::ALL).await?;
            books.insert(id, b.figures);
        }
        Ok(Expected {
            books,
            totals: overview.totals,
            unique_users: overview.unique_users,
        })
    }

    /// Waits until the stored statistics equal `traffic`'s exact figures; returns how long
    /// that took. Fails after `within`, showing the difference.
    pub async fn await_exact(
        &self,
        traffic: &Traffic,
        within: Duration,
    ) -> anyhow::Result<Duration> {
        let want = traffic.expected();
        let start = Instant::now();
        loop {
            let got = self.stored(&want).await?;
            if got == want {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                let mut diff = String::new();
                if got.totals != want.totals || got.unique_users != want.unique_users {
                    diff.push_str(&format!(
                        "totals: stored {:?} / {} users\n  exact {:?} / {} users\n",
                        got.totals, got.unique_users, want.totals, want.unique_users
                    ));
                }
                for (id, w) in &want.books {
                    if got.books.get(id) != Some(w) {
                        diff.push_str(&format!(
                            "book {id}: stored {:?}\n  exact {w:?}\n",
                            got.books.get(id)
                        ));
                    }
                }
                bail!(
                    "the stored statistics did not reach the exact figures of {} events within {within:?}:\n{diff}",
                    traffic.events.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until Kafka's own tool shows no lag for either group: the analytics group on
    /// every event partition, the bookstore's on every aggregate partition.
    pub async fn await_settled(&self, kafka: &KafkaEnv, within: Duration) -> anyhow::Result<()> {
        kafka
            .await_zero_lag(
                &self.cfg,
                ANALYTICS_GROUP,
                partitions_of(&Topic::EVENTS).len(),
                within,
            )
            .await?;
        kafka
            .await_zero_lag(
                &self.cfg,
                BOOKSTORE_GROUP,
                partitions_of(&[Topic::AggregatedStats]).len(),
                within,
            )
            .await?;
        Ok(())
    }

    /// Stops the bookstore; analytics instances are the caller's to stop.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_bookstore().await
    }
}
