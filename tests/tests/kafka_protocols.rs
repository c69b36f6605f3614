//! Pub/sub across groups and protocols: a classic group (two members, JoinGroup/SyncGroup
//! with folio's cooperative-sticky assignor) and a KIP-848 group (one member, assigned by
//! the broker) of folio read the same topics side by side on one broker, each getting
//! every record once, each committing its own offsets, each visible in Kafka's tool.
//! Needs a broker with both protocols (Kafka 4.x, `KAFKA_BOOTSTRAP`); without one it
//! fails and says how to provide one.

use std::time::Duration;

use anyhow::ensure;
use folio_domain::ports::{MessageBus, OffsetCommit, OutgoingRecord};
use folio_domain::topics::Topic;
use folio_kafka::{GroupProtocol, KafkaBus};
use folio_tests::bus_contract::{partitions_of, poll_both_until, Member, WITHIN};
use folio_tests::kafka_env::kafka;

const TOPICS: [Topic; 2] = [Topic::BookViews, Topic::BookDownloads];
const RECORDS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classic_and_a_kip848_group_read_the_same_topics_side_by_side() -> anyhow::Result<()> {
    let env = kafka().await;
    let cfg = env.config("protocols-side-by-side");
    let bus = |protocol| {
        let mut c = cfg.clone();
        c.group_protocol = protocol;
        KafkaBus::connect(c)
    };
    let classic = bus(GroupProtocol::Classic).await?;
    let consumer = bus(GroupProtocol::Consumer).await?;
    classic.provision().await?;

    let publisher = classic.publisher();
    for i in 0..RECORDS {
        publisher
            .send(OutgoingRecord {
                topic: TOPICS[i % 2],
                key: format!("k{}", i % 17).into_bytes(),
                value: format!("{i}").into_bytes(),
                headers: Vec::new(),
            })
            .await?;
    }
    publisher.flush().await?;

    let mut c1 = Member::join(&classic, "classic-1", "readers-classic", &TOPICS).await?;
    let mut c2 = Member::join(&classic, "classic-2", "readers-classic", &TOPICS).await?;
    let mut k = Member::join(&consumer, "kip848", "readers-kip848", &TOPICS).await?;
    let all = partitions_of(&TOPICS);

    // The classic members split the partitions between them and read everything once.
    let took = poll_both_until(
        &mut c1,
        &mut c2,
        WITHIN,
        "the classic group reads all",
        |a, b| {
            a.owned.is_disjoint(&b.owned)
                && a.owned.union(&b.owned).count() == all.len()
                && a.count() + b.count() == RECORDS
        },
    )
    .await?;
    println!(
        "classic group: {} + {} partitions, {} + {} records, in {took:?}",
        c1.owned.len(),
        c2.owned.len(),
        c1.count(),
        c2.count()
    );
    ensure!(!c1.owned.is_empty() && !c2.owned.is_empty());
    // The KIP-848 group, on the same topics at the same time, reads everything too.
    let took = k
        .poll_until(WITHIN, "the KIP-848 group reads all", |m| {
            m.owned == all && m.count() == RECORDS
        })
        .await?;
    println!("KIP-848 group: {RECORDS} records in {took:?}");

    // Each group commits its own positions; Kafka's tool shows both groups apart.
    for m in [&mut c1, &mut c2, &mut k] {
        let offsets: Vec<OffsetCommit> = m
            .records
            .iter()
            .filter_map(|(tp, rs)| {
                rs.last().map(|r| OffsetCommit {
                    partition: *tp,
                    offset: r.offset + 1,
                    metadata: String::new(),
                })
            })
            .collect();
        m.commit(&offsets).await?;
    }
    for (group, members) in [("readers-classic", 2), ("readers-kip848", 1)] {
        let shown = env.describe_group(&cfg, group).await?;
        ensure!(
            shown.len() == all.len() && shown.iter().all(|r| r.lag == Some(0)),
            "{group}: every partition committed with no lag: {shown:?}"
        );
        let ids: std::collections::BTreeSet<&str> =
            shown.iter().map(|r| r.consumer_id.as_str()).collect();
        ensure!(
            ids.len() == members,
            "{group}: {members} member(s) own the partitions: {ids:?}"
        );
    }
    for m in [&mut c1, &mut c2, &mut k] {
        m.leave().await?;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
