//! Reading a whole topic from the beginning with a folio group member of its own: the dead
//! letters (`analytics.dlq`) at the end of a run, and the aggregates when a difference
//! needs explaining.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::bail;
use folio_domain::analytics::DeadLetter;
use folio_domain::ports::{ConsumerEvent, MessageBus, Record};
use folio_domain::topics::{Topic, TopicPartition};

/// One record of `analytics.dlq`, with its origin headers read.
#[derive(Debug, Clone)]
pub struct DeadRecord {
    pub origin_topic: String,
    pub origin_partition: Option<i32>,
    pub origin_offset: Option<i64>,
    pub reason: String,
    pub value: Vec<u8>,
}

impl DeadRecord {
    pub fn from_record(r: &Record) -> Self {
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        DeadRecord {
            origin_topic: header(DeadLetter::ORIGIN_TOPIC).unwrap_or_default(),
            origin_partition: header(DeadLetter::ORIGIN_PARTITION).and_then(|s| s.parse().ok()),
            origin_offset: header(DeadLetter::ORIGIN_OFFSET).and_then(|s| s.parse().ok()),
            reason: header(DeadLetter::ERROR).unwrap_or_default(),
            value: r.value.clone(),
        }
    }

    /// Whether the reason is lateness.
    pub fn is_late(&self) -> bool {
        self.reason.starts_with("late")
    }
}

/// Every record of `topic` from the beginning, read as a fresh member of `group` (which
/// must be new, so nothing is committed for it). Done when every partition has caught up.
pub async fn read_topic(
    bus: &dyn MessageBus,
    group: &str,
    topic: Topic,
    timeout: Duration,
) -> anyhow::Result<Vec<(TopicPartition, Record)>> {
    let mut consumer = bus.join(group, &[topic]).await?;
    let until = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut assigned: BTreeSet<TopicPartition> = BTreeSet::new();
    // Per partition: the next offset to read and the latest high watermark seen.
    let mut position: BTreeMap<TopicPartition, (i64, i64)> = BTreeMap::new();
    let mut idles = 0;
    loop {
        if Instant::now() > until {
            let _ = consumer.leave().await;
            bail!("reading {topic}: not caught up within {timeout:?}");
        }
        match consumer.poll(Duration::from_millis(300)).await {
            Ok(ConsumerEvent::Assigned(list)) => {
                assigned.extend(list.iter().map(|a| a.partition));
                idles = 0;
            }
            Ok(ConsumerEvent::Revoked(list)) => {
                let _ = consumer.leave().await;
                bail!("reading {topic}: partitions {list:?} were revoked from a lone reader");
            }
            Ok(ConsumerEvent::Batch(b)) => {
                if let Some(last) = b.records.last() {
                    position.insert(b.partition, (last.offset + 1, b.high_watermark));
                }
                out.extend(b.records.into_iter().map(|r| (b.partition, r)));
                idles = 0;
            }
            Ok(ConsumerEvent::Idle) => {
                idles += 1;
                if assigned.len() != topic.partitions() as usize || idles < 2 {
                    continue;
                }
                // Caught up as the bus says now, not as batches or idleness said: on a
                // loaded cluster a slow first fetch looks idle while records wait (a
                // partition that never had a record has a high watermark of 0).
                let parts: Vec<TopicPartition> = assigned.iter().copied().collect();
                match consumer.high_watermarks(&parts).await {
                    Ok(hws) if hws.len() == parts.len() => {
                        let read_to = |tp: &TopicPartition| position.get(tp).map_or(0, |p| p.0);
                        if hws.iter().all(|(tp, hw)| read_to(tp) >= *hw) {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("chaos: reading {topic}: its high watermarks: {e}"),
                }
            }
            Err(e) => {
                eprintln!("chaos: reading {topic}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    let _ = consumer.leave().await;
    Ok(out)
}

/// Every dead letter.
pub async fn read_dead_letters(
    bus: &dyn MessageBus,
    group: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<DeadRecord>> {
    Ok(read_topic(bus, group, Topic::DeadLetters, timeout)
        .await?
        .iter()
        .map(|(_, r)| DeadRecord::from_record(r))
        .collect())
}
