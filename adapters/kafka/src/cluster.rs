//! [`Cluster`]: the one handle on the Kafka cluster that every part of the adapter uses.
//!
//! It owns what they share: the configuration, rskafka's client (its connections and
//! cached metadata, for producing and fetching), the watch that keeps rskafka's cached
//! partition leaders fresh (`leaders`), folio's own connections for everything rskafka
//! lacks (the group coordinator, topic admin), and the backoff policy every retry loop
//! follows. The publisher, the fetchers, the group member and the topic admin each hold a
//! clone; none of them knows another, and this module knows none of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use folio_domain::ports::{PartitionLag, ProducerStats};
use folio_domain::topics::TopicPartition;
use folio_domain::Result;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use tokio::time::Instant;
use tracing::debug;

use crate::config::KafkaConfig;
use crate::errors::{from_rskafka, unavailable};
use crate::leaders::LeaderWatch;
use crate::wire::{connect_any, BrokerConnection, ConnectSettings, WireError};

/// The cluster handle. Cheap to clone; clones share connections, metadata and the leader
/// watch.
#[derive(Clone, Debug)]
pub(crate) struct Cluster {
    pub(crate) cfg: Arc<KafkaConfig>,
    pub(crate) rs: Arc<Client>,
    leaders: Arc<LeaderWatch>,
    /// What the publishers and fetchers of this handle report, for metrics.
    pub(crate) observed: Arc<Observed>,
}

/// Figures every publisher and fetcher of one cluster handle adds to: the producers'
/// records summed, and each fetcher's lag.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    pub(crate) sent: AtomicU64,
    pub(crate) acked: AtomicU64,
    pub(crate) failed: AtomicU64,
    next_fetcher: AtomicU64,
    fetchers: Mutex<HashMap<u64, FetcherSlot>>,
}

/// A fetcher's group, partition and lag.
type FetcherSlot = (String, TopicPartition, Arc<AtomicI64>);

impl Observed {
    /// A new fetcher's lag slot, reported until [`Observed::forget`]; −1 until its first fetch.
    pub(crate) fn register_fetcher(
        &self,
        group: &str,
        tp: TopicPartition,
    ) -> (u64, Arc<AtomicI64>) {
        let id = self.next_fetcher.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(AtomicI64::new(-1));
        self.lock()
            .insert(id, (group.to_string(), tp, slot.clone()));
        (id, slot)
    }

    pub(crate) fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, FetcherSlot>> {
        self.fetchers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lag of every fetcher that has fetched once, by group and partition.
    pub(crate) fn lags(&self) -> Vec<PartitionLag> {
        let mut out: Vec<PartitionLag> = self
            .lock()
            .values()
            .filter_map(|(group, tp, slot)| {
                let lag = slot.load(Ordering::Relaxed);
                (lag >= 0).then(|| PartitionLag {
                    group: group.clone(),
                    partition: *tp,
                    lag,
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.group, a.partition).cmp(&(&b.group, b.partition)));
        out
    }

    pub(crate) fn producer(&self) -> ProducerStats {
        let sent = self.sent.load(Ordering::Relaxed);
        let acked = self.acked.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        ProducerStats {
            sent,
            acked,
            failed,
            in_flight: sent.saturating_sub(acked + failed),
        }
    }
}

/// Connects once over folio's own connection and fails at once if TLS refuses the broker's
/// certificate or the broker refuses the credentials or the mechanism. rskafka retries
/// those like a broken connection until its deadline, then may report only that no broker
/// answered. Any other failure here is left to rskafka's retries.
async fn refused_settings(cfg: &KafkaConfig) -> Result<()> {
    let settings = ConnectSettings::from_config(cfg);
    match tokio::time::timeout(cfg.request_deadline, connect_any(&cfg.bootstrap, &settings)).await {
        Ok(Err(e)) if e.is_refusal() => Err(e.into_domain()),
        _ => Ok(()),
    }
}

impl Cluster {
    /// Connects to the bootstrap brokers (fails with `Unavailable` if none answers within
    /// the request deadline).
    pub(crate) async fn connect(cfg: KafkaConfig) -> Result<Self> {
        let mut b = ClientBuilder::new(cfg.bootstrap.clone())
            .client_id(cfg.client_id.as_str())
            .backoff_config(cfg.rskafka_backoff())
            .max_message_size(
                (cfg.fetch_max_bytes as usize)
                    .saturating_mul(2)
                    .max(16 * 1024 * 1024),
            );
        if let Some(tls) = &cfg.tls {
            b = b.tls_config(tls.clone());
        }
        if let Some(sasl) = &cfg.sasl {
            b = b.sasl_config(sasl.to_rskafka());
        }
        if cfg.sasl.is_some() || cfg.tls.is_some() {
            refused_settings(&cfg).await?;
        }
        let deadline = cfg.request_deadline;
        let rs = tokio::time::timeout(deadline, b.build())
            .await
            .map_err(|_| {
                unavailable(format!(
                    "no broker of {:?} answered within {deadline:?}",
                    cfg.bootstrap
                ))
            })?
            .map_err(|e| from_rskafka("connect", e))?;
        Ok(Cluster {
            cfg: Arc::new(cfg),
            rs: Arc::new(rs),
            leaders: Arc::default(),
            observed: Arc::default(),
        })
    }

    /// What folio's own connections need from the configuration.
    pub(crate) fn settings(&self) -> ConnectSettings {
        ConnectSettings::from_config(&self.cfg)
    }

    /// The backoff between attempts of every retry loop of the adapter.
    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new()
    }

    /// A client for one partition of a broker-side topic. A failed leader lookup puts the
    /// cached leaders in doubt before it is returned, so every caller gets the refresh.
    pub(crate) async fn partition_client(
        &self,
        topic: String,
        partition: i32,
    ) -> Result<PartitionClient> {
        self.rs
            .partition_client(topic, partition, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| {
                self.leaders_in_doubt("no partition leader");
                from_rskafka("partition leader", e)
            })
    }

    /// Something suggests the cached partition leaders may be wrong; refresh them in the
    /// background (see `leaders`). Cheap to call often.
    pub(crate) fn leaders_in_doubt(&self, why: &'static str) {
        self.leaders.in_doubt(&self.rs, &self.cfg, why);
    }

    /// Partition counts of the topics that exist on the broker, by broker-side name. Also
    /// refreshes rskafka's cached metadata.
    pub(crate) async fn partition_counts(&self) -> Result<HashMap<String, i32>> {
        let topics = self
            .rs
            .list_topics()
            .await
            .map_err(|e| from_rskafka("list topics", e))?;
        Ok(topics
            .into_iter()
            .map(|t| (t.name, t.partitions.len() as i32))
            .collect())
    }

    /// A connection of folio's own to the first bootstrap broker that answers.
    pub(crate) async fn any_broker(&self) -> std::result::Result<BrokerConnection, WireError> {
        connect_any(&self.cfg.bootstrap, &self.settings()).await
    }

    /// A connection to `group`'s coordinator, asking whichever bootstrap broker answers
    /// and retrying (within the request deadline) while the coordinator is being elected
    /// or loaded, or still named on a broker that died: on a cluster its partition of
    /// `__consumer_offsets` moves to another node once the controller has noticed.
    pub(crate) async fn coordinator(
        &self,
        group: &str,
    ) -> std::result::Result<BrokerConnection, WireError> {
        let s = self.settings();
        let give_up = Instant::now() + self.cfg.request_deadline;
        let mut backoff = Backoff::starting_at(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let found = async {
                let mut any = connect_any(&self.cfg.bootstrap, &s).await?;
                match any.find_coordinator(group).await? {
                    Some(addr) if addr == any.addr() => Ok(Some(any)),
                    Some(addr) => BrokerConnection::connect(&addr, &s).await.map(Some),
                    None => Ok(None),
                }
            };
            match found.await {
                Ok(Some(conn)) => return Ok(conn),
                Err(e) if e.is_connection() && Instant::now() < give_up => {
                    debug!(group, error = %e, "group coordinator unreachable; asking again");
                    backoff.wait().await
                }
                Err(e) => return Err(e),
                Ok(None) if Instant::now() < give_up => backoff.wait().await,
                Ok(None) => {
                    return Err(WireError::Connect {
                        addr: self.cfg.bootstrap.join(","),
                        msg: format!(
                            "no coordinator for group {group} within {:?}",
                            self.cfg.request_deadline
                        ),
                    })
                }
            }
        }
    }
}

/// Exponential backoff: 100 ms doubling to 2 s, back to the start after a success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    start: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self::starting_at(Duration::from_millis(100), Duration::from_secs(2))
    }

    pub(crate) fn starting_at(start: Duration, max: Duration) -> Self {
        Backoff {
            start,
            max,
            next: start,
        }
    }

    /// The pause before the next attempt; each call doubles the one after, up to the cap.
    pub(crate) fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// Sleeps for [`Backoff::next_pause`].
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }

    /// After a success: the next failure waits the shortest pause again.
    pub(crate) fn reset(&mut self) {
        self.next = self.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new();
        let pauses: Vec<u128> = (0..7).map(|_| b.next_pause().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 2000, 2000]);
        b.reset();
        assert_eq!(b.next_pause(), Duration::from_millis(100));
    }
}
