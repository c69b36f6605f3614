//! The client half of the classic consumer group protocol that needs no broker: the
//! ConsumerProtocol encodings of a member's subscription and assignment (what Kafka's Java
//! client puts into JoinGroup and SyncGroup, so Kafka's tools can read folio's members),
//! and the assignors the elected leader runs: `cooperative-sticky` (KIP-429) and `range`.
//!
//! Everything here is pure: names and partition numbers in, names and partition numbers
//! out. Topics are broker-side names, as members of other clients may subscribe to topics
//! folio does not know.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTopic;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// The protocol type of consumer groups: the one Kafka's tools describe.
pub(crate) const PROTOCOL_TYPE: &str = "consumer";
/// The incremental assignor (KIP-429), preferred.
pub(crate) const COOPERATIVE_STICKY: &str = "cooperative-sticky";
/// The eager assignor, the fallback every consumer client offers.
pub(crate) const RANGE: &str = "range";
/// The highest ConsumerProtocol versions folio writes (and Kafka 3.x/4.x's Java client).
const SUBSCRIPTION_VERSION: i16 = 3;
const ASSIGNMENT_VERSION: i16 = 3;

/// Partitions by topic name.
pub(crate) type Partitions = BTreeMap<String, BTreeSet<i32>>;

/// What one member tells the leader in its JoinGroup metadata.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Subscription {
    pub topics: Vec<String>,
    pub user_data: Option<Bytes>,
    /// The partitions the member holds now (v1+): what cooperative rebalancing keeps.
    pub owned: Partitions,
    /// The generation in which it got them (v2+); -1 when unknown.
    pub generation: i32,
}

fn protocol_error(e: impl std::fmt::Display) -> String {
    format!("consumer protocol: {e}")
}

/// The version a reader decodes at: its own highest for a newer writer, which only appends
/// fields (Kafka's forward-compatibility rule for the consumer protocol).
fn read_version(buf: &mut Bytes, highest: i16) -> Result<i16, String> {
    if buf.remaining() < 2 {
        return Err(protocol_error("no version"));
    }
    let v = buf.get_i16();
    if v < 0 {
        return Err(protocol_error(format!("version {v}")));
    }
    Ok(v.min(highest))
}

fn name(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The user data Kafka's cooperative-sticky assignor writes: the member's generation.
pub(crate) fn cooperative_user_data(generation: i32) -> Bytes {
    Bytes::copy_from_slice(&generation.to_be_bytes())
}

/// A subscription as the ConsumerProtocol writes it: version, then the v`version` body.
pub(crate) fn encode_subscription(s: &Subscription, version: i16) -> Result<Bytes, String> {
    let msg = ConsumerProtocolSubscription::default()
        .with_topics(s.topics.iter().map(|t| name(t)).collect())
        .with_user_data(s.user_data.clone())
        .with_owned_partitions(
            s.owned
                .iter()
                .filter(|(_, ps)| !ps.is_empty())
                .map(|(t, ps)| {
                    OwnedTopic::default()
                        .with_topic(TopicName(name(t)))
                        .with_partitions(ps.iter().copied().collect())
                })
                .collect(),
        )
        .with_generation_id(s.generation);
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    msg.encode(&mut buf, version).map_err(protocol_error)?;
    Ok(buf.freeze())
}

/// [`encode_subscription`] at the version Kafka's Java client writes today.
pub(crate) fn subscription_bytes(s: &Subscription) -> Result<Bytes, String> {
    encode_subscription(s, SUBSCRIPTION_VERSION)
}

/// Reads a subscription of any version (fields a version lacks take their defaults).
pub(crate) fn decode_subscription(mut buf: Bytes) -> Result<Subscription, String> {
    let v = read_version(&mut buf, SUBSCRIPTION_VERSION)?;
    let m = ConsumerProtocolSubscription::decode(&mut buf, v).map_err(protocol_error)?;
    let mut owned = Partitions::new();
    for t in m.owned_partitions {
        owned
            .entry(t.topic.0.to_string())
            .or_default()
            .extend(t.partitions);
    }
    Ok(Subscription {
        topics: m.topics.iter().map(|t| t.to_string()).collect(),
        user_data: m.user_data,
        owned,
        generation: m.generation_id,
    })
}

/// An assignment as the ConsumerProtocol writes it.
pub(crate) fn encode_assignment(a: &Partitions, version: i16) -> Result<Bytes, String> {
    let msg = ConsumerProtocolAssignment::default().with_assigned_partitions(
        a.iter()
            .filter(|(_, ps)| !ps.is_empty())
            .map(|(t, ps)| {
                AssignedTopic::default()
                    .with_topic(TopicName(name(t)))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    );
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    msg.encode(&mut buf, version).map_err(protocol_error)?;
    Ok(buf.freeze())
}

/// [`encode_assignment`] at the version Kafka's Java client writes today.
pub(crate) fn assignment_bytes(a: &Partitions) -> Result<Bytes, String> {
    encode_assignment(a, ASSIGNMENT_VERSION)
}

/// Reads an assignment; an empty answer (a member the leader gave nothing, or a group
/// without a leader's assignment yet) is an empty assignment.
pub(crate) fn decode_assignment(mut buf: Bytes) -> Result<Partitions, String> {
    if buf.is_empty() {
        return Ok(Partitions::new());
    }
    let v = read_version(&mut buf, ASSIGNMENT_VERSION)?;
    let m = ConsumerProtocolAssignment::decode(&mut buf, v).map_err(protocol_error)?;
    let mut out = Partitions::new();
    for t in m.assigned_partitions {
        out.entry(t.topic.0.to_string())
            .or_default()
            .extend(t.partitions);
    }
    Ok(out)
}

/// One member as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub id: String,
    /// `group.instance.id` of a static member: ordering follows it, so a restarted static
    /// member lands where it was.
    pub instance_id: Option<String>,
    pub subscription: Subscription,
}

impl Member {
    fn sort_key(&self) -> (&str, &str) {
        (
            self.instance_id.as_deref().unwrap_or(self.id.as_str()),
            self.id.as_str(),
        )
    }
}

/// Eager range: per topic, its subscribers sorted, each given a consecutive run of
/// partitions, the first ones one more when the count does not divide evenly.
pub(crate) fn assign_range(
    members: &[Member],
    counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Partitions> {
    let mut out: BTreeMap<String, Partitions> = members
        .iter()
        .map(|m| (m.id.clone(), Partitions::new()))
        .collect();
    for (topic, &count) in counts {
        let mut subs: Vec<&Member> = members
            .iter()
            .filter(|m| m.subscription.topics.iter().any(|t| t == topic))
            .collect();
        if subs.is_empty() || count <= 0 {
            continue;
        }
        subs.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        let n = subs.len() as i32;
        let (each, extra) = (count / n, count % n);
        for (i, m) in subs.iter().enumerate() {
            let i = i as i32;
            let start = each * i + i.min(extra);
            let len = each + i32::from(i < extra);
            if len > 0 {
                out.entry(m.id.clone())
                    .or_default()
                    .entry(topic.clone())
                    .or_default()
                    .extend(start..start + len);
            }
        }
    }
    out
}

/// Cooperative sticky (KIP-429): a balanced assignment (counts within one of each other
/// among members with the same subscription) that keeps every member's valid partitions
/// where it can; then each partition that would move from its current owner to another
/// member is left out of this generation, so the owner revokes it first and the second
/// rebalance, which the owner's rejoin starts, hands it over.
///
/// A partition claimed by several members belongs to the one with the newest generation;
/// claims of equal generation cancel each other.
pub(crate) fn assign_cooperative_sticky(
    members: &[Member],
    counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Partitions> {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    let subscribed = |m: &Member, t: &str| m.subscription.topics.iter().any(|s| s == t);
    let all: BTreeSet<(String, i32)> = counts
        .iter()
        .filter(|(t, _)| sorted.iter().any(|m| subscribed(m, t)))
        .flat_map(|(t, &n)| (0..n.max(0)).map(move |p| (t.clone(), p)))
        .collect();

    // Valid current owners.
    let mut owner: BTreeMap<(String, i32), (&str, i32)> = BTreeMap::new();
    let mut contested: BTreeSet<(String, i32)> = BTreeSet::new();
    for m in &sorted {
        for (t, ps) in &m.subscription.owned {
            if !subscribed(m, t) {
                continue;
            }
            for p in ps {
                let tp = (t.clone(), *p);
                if !all.contains(&tp) {
                    continue;
                }
                let g = m.subscription.generation;
                match owner.get(&tp) {
                    None if !contested.contains(&tp) => {
                        owner.insert(tp, (m.id.as_str(), g));
                    }
                    None => {}
                    Some(&(_, og)) if g > og => {
                        owner.insert(tp, (m.id.as_str(), g));
                    }
                    Some(&(_, og)) if g == og => {
                        owner.remove(&tp);
                        contested.insert(tp);
                    }
                    Some(_) => {}
                }
            }
        }
    }

    // Quotas over the members (folio's groups subscribe alike; others still get a valid,
    // if less even, assignment from the least-loaded fill below).
    let n_members = sorted.len().max(1);
    let min_quota = all.len() / n_members;
    let mut extras = all.len() % n_members;
    let mut load: BTreeMap<&str, BTreeSet<(String, i32)>> = sorted
        .iter()
        .map(|m| (m.id.as_str(), BTreeSet::new()))
        .collect();
    // Keep what is owned, up to the quota; the members holding most keep first.
    let mut by_owned: Vec<&Member> = sorted.clone();
    let owned_count = |m: &Member| owner.values().filter(|(id, _)| *id == m.id).count();
    by_owned.sort_by_key(|m| std::cmp::Reverse(owned_count(m)));
    for m in by_owned {
        let mine: Vec<(String, i32)> = owner
            .iter()
            .filter(|(_, (id, _))| *id == m.id)
            .map(|(tp, _)| tp.clone())
            .collect();
        let mut quota = min_quota;
        if mine.len() > min_quota && extras > 0 {
            quota += 1;
            extras -= 1;
        }
        if let Some(set) = load.get_mut(m.id.as_str()) {
            set.extend(mine.into_iter().take(quota));
        }
    }
    // Everything else to the least-loaded member subscribed to its topic.
    let taken: BTreeSet<(String, i32)> = load.values().flatten().cloned().collect();
    for tp in all.iter().filter(|tp| !taken.contains(*tp)) {
        let pick = sorted
            .iter()
            .filter(|m| subscribed(m, &tp.0))
            .min_by_key(|m| load.get(m.id.as_str()).map_or(0, BTreeSet::len))
            .map(|m| m.id.as_str());
        if let Some(id) = pick {
            if let Some(set) = load.get_mut(id) {
                set.insert(tp.clone());
            }
        }
    }

    // Incremental: nothing moves from one member to another within one generation.
    let mut out: BTreeMap<String, Partitions> = members
        .iter()
        .map(|m| (m.id.clone(), Partitions::new()))
        .collect();
    for (id, set) in load {
        for tp in set {
            if owner.get(&tp).is_some_and(|(o, _)| *o != id) {
                continue;
            }
            out.entry(id.to_string())
                .or_default()
                .entry(tp.0)
                .or_default()
                .insert(tp.1);
        }
    }
    out
}

/// Runs the assignor the group chose (`protocol`) over the members' subscriptions.
pub(crate) fn assign(
    protocol: &str,
    members: &[Member],
    counts: &BTreeMap<String, i32>,
) -> Result<BTreeMap<String, Partitions>, String> {
    match protocol {
        COOPERATIVE_STICKY => Ok(assign_cooperative_sticky(members, counts)),
        RANGE => Ok(assign_range(members, counts)),
        other => Err(format!(
            "the group chose assignor {other:?}, which folio lacks"
        )),
    }
}

/// True when the assignor rebalances incrementally (members keep their partitions while
/// they rejoin); false for eager ones, whose members give everything up first.
pub(crate) fn is_cooperative(protocol: &str) -> bool {
    protocol == COOPERATIVE_STICKY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[(&str, &[i32])]) -> Partitions {
        list.iter()
            .map(|(t, ps)| (t.to_string(), ps.iter().copied().collect()))
            .collect()
    }

    fn member(id: &str, topics: &[&str], owned: &[(&str, &[i32])], generation: i32) -> Member {
        Member {
            id: id.into(),
            instance_id: None,
            subscription: Subscription {
                topics: topics.iter().map(|t| t.to_string()).collect(),
                user_data: None,
                owned: parts(owned),
                generation,
            },
        }
    }

    fn counts(list: &[(&str, i32)]) -> BTreeMap<String, i32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn size(p: &Partitions) -> usize {
        p.values().map(BTreeSet::len).sum()
    }

    /// Built by hand from the protocol definition (ConsumerProtocolSubscription.json):
    /// int16 version; topics: int32 count, then int16 length + bytes each; user_data:
    /// int32 length + bytes (-1 = null); v1+ owned_partitions: int32 count of {topic
    /// string, int32 count of int32}; v2+ generation_id int32; v3+ rack_id nullable string.
    #[test]
    fn subscriptions_encode_as_the_protocol_defines_v0_to_v3() {
        let s = Subscription {
            topics: vec!["ab".into()],
            user_data: Some(cooperative_user_data(7)),
            owned: parts(&[("ab", &[1])]),
            generation: 7,
        };
        let head: Vec<u8> = vec![
            0, 0, 0, 1, 0, 2, b'a', b'b', // topics ["ab"]
            0, 0, 0, 4, 0, 0, 0, 7, // user_data: generation 7
        ];
        let owned: Vec<u8> = vec![0, 0, 0, 1, 0, 2, b'a', b'b', 0, 0, 0, 1, 0, 0, 0, 1];
        let generation: Vec<u8> = vec![0, 0, 0, 7];
        let rack: Vec<u8> = vec![0xff, 0xff];
        let want = |v: i16| -> Vec<u8> {
            let mut out = v.to_be_bytes().to_vec();
            out.extend(&head);
            if v >= 1 {
                out.extend(&owned);
            }
            if v >= 2 {
                out.extend(&generation);
            }
            if v >= 3 {
                out.extend(&rack);
            }
            out
        };
        for v in 0..=3 {
            let bytes = encode_subscription(&s, v).expect("encodes");
            assert_eq!(bytes.to_vec(), want(v), "version {v}");
            let back = decode_subscription(bytes).expect("decodes");
            assert_eq!(back.topics, s.topics);
            assert_eq!(back.user_data, s.user_data);
            assert_eq!(
                back.owned,
                if v >= 1 {
                    s.owned.clone()
                } else {
                    Partitions::new()
                }
            );
            assert_eq!(back.generation, if v >= 2 { 7 } else { -1 });
        }
        assert_eq!(subscription_bytes(&s).expect("encodes").to_vec(), want(3));
        // A newer writer's extra fields are ignored.
        let mut v4 = want(3);
        v4[1] = 4;
        v4.extend([0, 0, 0, 9]);
        assert_eq!(
            decode_subscription(Bytes::from(v4))
                .expect("decodes")
                .generation,
            7
        );
    }

    /// ConsumerProtocolAssignment.json: int16 version; assigned_partitions: int32 count
    /// of {topic string, int32 count of int32}; user_data nullable bytes.
    #[test]
    fn assignments_encode_as_the_protocol_defines() {
        let a = parts(&[("t", &[0, 2]), ("u", &[1])]);
        let want: Vec<u8> = vec![
            0, 3, // version
            0, 0, 0, 2, // two topics
            0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2, // t: [0, 2]
            0, 1, b'u', 0, 0, 0, 1, 0, 0, 0, 1, // u: [1]
            0xff, 0xff, 0xff, 0xff, // no user data
        ];
        let bytes = assignment_bytes(&a).expect("encodes");
        assert_eq!(bytes.to_vec(), want);
        assert_eq!(decode_assignment(bytes).expect("decodes"), a);
        let mut v0 = want.clone();
        v0[1] = 0;
        assert_eq!(encode_assignment(&a, 0).expect("encodes").to_vec(), v0);
        assert_eq!(
            decode_assignment(Bytes::new()).expect("empty"),
            Partitions::new()
        );
    }

    #[test]
    fn range_gives_consecutive_runs_the_first_members_one_more() {
        let ms = [
            member("b", &["t", "u"], &[], -1),
            member("a", &["t", "u"], &[], -1),
            member("c", &["t"], &[], -1),
        ];
        let out = assign_range(&ms, &counts(&[("t", 7), ("u", 3)]));
        assert_eq!(out["a"], parts(&[("t", &[0, 1, 2]), ("u", &[0, 1])]));
        assert_eq!(out["b"], parts(&[("t", &[3, 4]), ("u", &[2])]));
        assert_eq!(out["c"], parts(&[("t", &[5, 6])]));
    }

    #[test]
    fn cooperative_sticky_from_nothing_is_balanced_and_complete() {
        let ms = [
            member("a", &["t", "u"], &[], -1),
            member("b", &["t", "u"], &[], -1),
            member("c", &["t", "u"], &[], -1),
        ];
        let out = assign_cooperative_sticky(&ms, &counts(&[("t", 3), ("u", 5)]));
        let sizes: Vec<usize> = out.values().map(size).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 8);
        assert!(sizes.iter().all(|s| (2..=3).contains(s)), "{out:?}");
        // No partition twice.
        let mut seen = BTreeSet::new();
        for p in out.values() {
            for (t, ps) in p {
                for x in ps {
                    assert!(seen.insert((t.clone(), *x)));
                }
            }
        }
    }

    #[test]
    fn cooperative_sticky_revokes_only_what_moves_and_hands_it_over_next_round() {
        let all: &[i32] = &[0, 1, 2, 3, 4, 5];
        // a owned everything; b joins.
        let first = [
            member("a", &["t"], &[("t", all)], 1),
            member("b", &["t"], &[], -1),
        ];
        let c = counts(&[("t", 6)]);
        let out = assign_cooperative_sticky(&first, &c);
        // a keeps three, nothing goes to b yet: what a gives up is not handed over in the
        // same generation.
        assert_eq!(size(&out["a"]), 3);
        assert_eq!(size(&out["b"]), 0);
        let kept: Vec<i32> = out["a"]["t"].iter().copied().collect();
        // a revokes the rest and rejoins: the second rebalance gives them to b.
        let second = [
            member("a", &["t"], &[("t", &kept)], 2),
            member("b", &["t"], &[], -1),
        ];
        let out2 = assign_cooperative_sticky(&second, &c);
        assert_eq!(out2["a"]["t"].iter().copied().collect::<Vec<_>>(), kept);
        assert_eq!(size(&out2["b"]), 3);
        assert!(out2["b"]["t"].is_disjoint(&out2["a"]["t"]));
    }

    #[test]
    fn cooperative_sticky_keeps_a_balanced_assignment_as_it_is() {
        let ms = [
            member("a", &["t"], &[("t", &[0, 2, 4])], 3),
            member("b", &["t"], &[("t", &[1, 3, 5])], 3),
        ];
        let out = assign_cooperative_sticky(&ms, &counts(&[("t", 6)]));
        assert_eq!(out["a"], parts(&[("t", &[0, 2, 4])]));
        assert_eq!(out["b"], parts(&[("t", &[1, 3, 5])]));
    }

    #[test]
    fn cooperative_sticky_gives_a_leavers_partitions_to_the_rest_at_once() {
        // c left: its partitions have no owner, so they move in this generation.
        let ms = [
            member("a", &["t"], &[("t", &[0, 1])], 4),
            member("b", &["t"], &[("t", &[2, 3])], 4),
        ];
        let out = assign_cooperative_sticky(&ms, &counts(&[("t", 6)]));
        assert_eq!(size(&out["a"]) + size(&out["b"]), 6);
        assert!(out["a"]["t"].is_superset(&[0, 1].into_iter().collect()));
        assert!(out["b"]["t"].is_superset(&[2, 3].into_iter().collect()));
    }

    #[test]
    fn cooperative_sticky_settles_claims_by_generation() {
        // A stale claim (older generation) loses; equal claims cancel.
        let ms = [
            member("a", &["t"], &[("t", &[0, 1])], 5),
            member("b", &["t"], &[("t", &[0])], 4),
        ];
        let out = assign_cooperative_sticky(&ms, &counts(&[("t", 2)]));
        assert_eq!(out["a"], parts(&[("t", &[0])]));
        // a owns both validly: 1 would move to b, so it waits a round.
        assert_eq!(size(&out["b"]), 0);
        let tie = [
            member("a", &["t"], &[("t", &[0])], 5),
            member("b", &["t"], &[("t", &[0])], 5),
        ];
        let out = assign_cooperative_sticky(&tie, &counts(&[("t", 2)]));
        assert_eq!(size(&out["a"]) + size(&out["b"]), 2);
    }

    #[test]
    fn unknown_assignors_are_refused() {
        assert!(assign("roundrobin", &[], &BTreeMap::new()).is_err());
        assert!(is_cooperative(COOPERATIVE_STICKY) && !is_cooperative(RANGE));
    }
}
