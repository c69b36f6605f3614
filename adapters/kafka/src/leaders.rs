//! Keeps rskafka's view of partition leaders from going stale.
//!
//! rskafka answers "who leads this partition?" from the last *unfiltered* metadata answer it
//! holds (the one its client took at start, or the latest `list_topics`). It drops that
//! answer when a connection breaks or a broker says "not the leader", but not when the
//! answer itself says a partition has no leader: it retries `LeaderNotAvailable` against
//! the same cached answer until its deadline, and again on every later attempt. An answer
//! taken while a restarted broker was still electing leaders therefore reports "no leader"
//! for as long as the process lives, and fetching and publishing on those partitions stop.
//!
//! [`LeaderWatch::in_doubt`] is the way out. Whoever sees a partition operation fail (or
//! the group coordinator answer again after an outage) calls it, through the cluster handle;
//! a background task then asks the broker over folio's own connection until every
//! partition of the catalog's topics has a leader, and only then takes a fresh unfiltered
//! answer into rskafka's cache with `list_topics`. Calls while a refresh runs are folded
//! into one more run after it.
//!
//! This module knows rskafka's client and the configuration, not the cluster handle that
//! owns them, so the handle can own a watch without the two importing each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use folio_domain::topics::Topic;
use rskafka::client::Client;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::KafkaConfig;
use crate::wire::{connect_any, ConnectSettings, WireError};

/// Topic error UNKNOWN_TOPIC_OR_PARTITION: a catalog topic that was never provisioned
/// has no partitions to lead.
pub(crate) const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

/// One per cluster handle, shared by its clones.
#[derive(Debug, Default)]
pub(crate) struct LeaderWatch {
    /// A refresh task is running.
    running: AtomicBool,
    /// Someone asked while it ran: run once more.
    again: AtomicBool,
}

impl LeaderWatch {
    /// Something suggests the leaders cached in `rs` may be wrong; refresh them in the
    /// background (see the module docs). Cheap to call often.
    pub(crate) fn in_doubt(
        self: &Arc<Self>,
        rs: &Arc<Client>,
        cfg: &Arc<KafkaConfig>,
        why: &'static str,
    ) {
        self.again.store(true, Ordering::SeqCst);
        if self.running.swap(true, Ordering::SeqCst) {
            return;
        }
        let (watch, rs, cfg) = (self.clone(), rs.clone(), cfg.clone());
        debug!(why, "refreshing partition leaders");
        tokio::spawn(async move {
            loop {
                watch.again.store(false, Ordering::SeqCst);
                refresh(&rs, &cfg).await;
                // At most one refresh a second, however many failures report in.
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !watch.again.load(Ordering::SeqCst) {
                    watch.running.store(false, Ordering::SeqCst);
                    // A call between the load and the store found `running` still set.
                    if watch.again.load(Ordering::SeqCst)
                        && !watch.running.swap(true, Ordering::SeqCst)
                    {
                        continue;
                    }
                    return;
                }
            }
        });
    }
}

/// Waits (bounded) until the broker names a leader for every catalog partition, then
/// replaces rskafka's cached metadata.
async fn refresh(rs: &Client, cfg: &KafkaConfig) {
    let names: Vec<String> = Topic::ALL.iter().map(|t| cfg.topic_name(*t)).collect();
    let settings = ConnectSettings::from_config(cfg);
    let give_up = Instant::now() + cfg.request_deadline;
    let mut pause = Duration::from_millis(200);
    loop {
        match leaderless(&cfg.bootstrap, &names, &settings).await {
            Ok(0) => break,
            Ok(n) => debug!(partitions = n, "partitions still without a leader"),
            Err(e) => debug!(error = %e, "metadata for the leader check failed"),
        }
        if Instant::now() + pause > give_up {
            warn!(
                "partition leaders still unknown after {:?}; refreshing anyway",
                cfg.request_deadline
            );
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    match tokio::time::timeout(cfg.request_deadline, rs.list_topics()).await {
        Ok(Ok(_)) => info!("partition leaders refreshed"),
        Ok(Err(e)) => warn!(error = %e, "refreshing partition leaders failed"),
        Err(_) => warn!("refreshing partition leaders timed out"),
    }
}

/// How many partitions of `names` the broker reports without a leader.
async fn leaderless(
    bootstrap: &[String],
    names: &[String],
    s: &ConnectSettings,
) -> Result<usize, WireError> {
    let mut conn = connect_any(bootstrap, s).await?;
    let md = conn.topic_metadata(names).await?;
    Ok(md
        .topics
        .iter()
        .filter(|t| t.error_code != UNKNOWN_TOPIC_OR_PARTITION)
        .map(|t| {
            if t.error_code != 0 {
                // The topic as a whole is not ready (e.g. its leaders are being elected).
                return 1;
            }
            t.partitions
                .iter()
                .filter(|p| p.error_code != 0 || p.leader_id.0 < 0)
                .count()
        })
        .sum())
}

#[cfg(test)]
mod tests {
    //! A fake broker that answers just ApiVersions and Metadata, to catch rskafka holding
    //! a "no leader" answer after the broker has elected one.

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::{Buf, BufMut, Bytes, BytesMut};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, ApiVersionsResponse, BrokerId, MetadataRequest, MetadataResponse, RequestHeader,
        ResponseHeader, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use rskafka::client::error::Error as RsError;
    use rskafka::client::partition::UnknownTopicHandling;
    use rskafka::client::{Client, ClientBuilder};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::LeaderWatch;
    use crate::config::KafkaConfig;

    const TOPIC: &str = "book.views";

    /// One broker (node 1) leading the single partition of [`TOPIC`] once `elected`.
    struct FakeBroker {
        port: u16,
        elected: AtomicBool,
    }

    impl FakeBroker {
        async fn start() -> Arc<FakeBroker> {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
            let broker = Arc::new(FakeBroker {
                port: listener.local_addr().expect("address").port(),
                elected: AtomicBool::new(false),
            });
            let b = broker.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(b.clone().serve(stream));
                }
            });
            broker
        }

        async fn serve(self: Arc<Self>, mut stream: TcpStream) {
            loop {
                let Ok(len) = stream.read_i32().await else {
                    return;
                };
                let mut frame = vec![0; usize::try_from(len).expect("length")];
                if stream.read_exact(&mut frame).await.is_err() {
                    return;
                }
                let mut frame = Bytes::from(frame);
                let key = ApiKey::try_from((&frame[..]).get_i16()).expect("known api");
                let version = (&frame[2..]).get_i16();
                let header = RequestHeader::decode(&mut frame, key.request_header_version(version))
                    .expect("request header");
                let mut out = BytesMut::new();
                out.put_i32(0);
                ResponseHeader::default()
                    .with_correlation_id(header.correlation_id)
                    .encode(&mut out, key.response_header_version(version))
                    .expect("response header");
                match key {
                    ApiKey::ApiVersions => ApiVersionsResponse::default()
                        .with_api_keys(vec![
                            ApiVersion::default()
                                .with_api_key(ApiKey::ApiVersions as i16)
                                .with_max_version(3),
                            ApiVersion::default()
                                .with_api_key(ApiKey::Metadata as i16)
                                .with_max_version(12),
                        ])
                        .encode(&mut out, version),
                    ApiKey::Metadata => {
                        let req = MetadataRequest::decode(&mut frame, version).expect("metadata");
                        self.metadata(req).encode(&mut out, version)
                    }
                    other => panic!("the fake broker does not answer {other:?}"),
                }
                .expect("response body");
                let n = i32::try_from(out.len() - 4).expect("length");
                out[0..4].copy_from_slice(&n.to_be_bytes());
                if stream.write_all(&out).await.is_err() {
                    return;
                }
            }
        }

        fn metadata(&self, req: MetadataRequest) -> MetadataResponse {
            let leader = if self.elected.load(Ordering::SeqCst) {
                1
            } else {
                -1
            };
            let names: Vec<String> = match req.topics {
                None => vec![TOPIC.into()],
                Some(ts) => ts
                    .into_iter()
                    .filter_map(|t| t.name.map(|n| n.0.to_string()))
                    .collect(),
            };
            let topics = names
                .into_iter()
                .map(|name| {
                    let t = MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
                    if name != TOPIC {
                        return t.with_error_code(super::UNKNOWN_TOPIC_OR_PARTITION);
                    }
                    t.with_topic_id(uuid::Uuid::from_u128(7))
                        .with_partitions(vec![MetadataResponsePartition::default()
                            .with_partition_index(0)
                            .with_leader_id(BrokerId(leader))
                            .with_replica_nodes(vec![BrokerId(1)])
                            .with_isr_nodes(vec![BrokerId(1)])])
                })
                .collect();
            MetadataResponse::default()
                .with_brokers(vec![MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_static_str("127.0.0.1"))
                    .with_port(i32::from(self.port))])
                .with_controller_id(BrokerId(1))
                .with_topics(topics)
        }
    }

    async fn leader_found(client: &Client) -> Result<(), RsError> {
        client
            .partition_client(TOPIC, 0, UnknownTopicHandling::Retry)
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn a_leaderless_answer_cached_at_start_is_replaced_once_in_doubt() {
        let broker = FakeBroker::start().await;
        let mut cfg = KafkaConfig::new(&format!("127.0.0.1:{}", broker.port));
        cfg.request_deadline = Duration::from_secs(2);
        // The client caches the broker's first answer: no leader yet.
        let client = Arc::new(
            ClientBuilder::new(cfg.bootstrap.clone())
                .backoff_config(cfg.rskafka_backoff())
                .build()
                .await
                .expect("connects"),
        );
        let cfg = Arc::new(cfg);
        broker.elected.store(true, Ordering::SeqCst);

        // rskafka keeps asking its cache, so the election goes unnoticed.
        let stuck = leader_found(&client).await.expect_err("stale cache");
        assert!(
            matches!(&stuck, RsError::RetryFailed(_))
                && stuck.to_string().contains("LeaderNotAvailable"),
            "{stuck}"
        );

        Arc::new(LeaderWatch::default()).in_doubt(&client, &cfg, "test");
        let mut found = false;
        for _ in 0..50 {
            if tokio::time::timeout(Duration::from_millis(500), leader_found(&client))
                .await
                .is_ok_and(|r| r.is_ok())
            {
                found = true;
                break;
            }
        }
        assert!(found, "the partition's leader is found after the refresh");
    }
}
