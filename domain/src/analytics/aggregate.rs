//! The aggregate the analytics service publishes: the complete figures of one book in one
//! window, from one source partition, with the offsets they cover.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::sketch::Sketch;
use crate::events::{rfc3339, Event};
use crate::ids::BookId;
use crate::money::Currency;
use crate::topics::{Topic, TopicPartition};

/// The figures of one book's events of one topic in one window.
///
/// Which fields move depends on the source topic: `events` counts views, downloads,
/// purchases, review events or rating events. Rating and review fields are deltas, so an
/// update that replaces an old value moves the all-time figures exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// Events counted (each distinct `event_id` once).
    pub events: u64,
    /// Views without a user.
    #[serde(default)]
    pub anonymous: u64,
    /// Distinct users behind the events.
    #[serde(default)]
    pub users: Sketch,
    /// Earliest and latest event time.
    #[serde(with = "opt_rfc3339", default, skip_serializing_if = "Option::is_none")]
    pub first_at: Option<DateTime<Utc>>,
    #[serde(with = "opt_rfc3339", default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<DateTime<Utc>>,
    /// Revenue in minor units of `currency`.
    #[serde(default)]
    pub revenue_cents: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    #[serde(default)]
    pub reviews_created: u64,
    #[serde(default)]
    pub reviews_updated: u64,
    /// Change in the total length of current review texts.
    #[serde(default)]
    pub review_length_delta: i64,
    #[serde(default)]
    pub ratings_created: u64,
    #[serde(default)]
    pub ratings_updated: u64,
    /// Change in the sum of current ratings.
    #[serde(default)]
    pub rating_sum_delta: i64,
    /// Change in how many current ratings have 1..=5 stars.
    #[serde(default)]
    pub rating_distribution_delta: [i64; 5],
    /// Sum of the values submitted in this window (creates and updates).
    #[serde(default)]
    pub submitted_rating_sum: i64,
}

impl Figures {
    /// Folds one event in. Fails (leaving the figures unchanged) when a purchase's currency
    /// differs from the currency already summed, or when its price would take the revenue
    /// past `i64`: a sum never wraps.
    pub fn add(&mut self, event: &Event) -> Result<(), String> {
        if let Event::BookPurchased { price, .. } = event {
            if let Some(c) = self.currency.filter(|c| *c != price.currency) {
                return Err(format!(
                    "purchase in {} cannot be summed with revenue in {c}",
                    price.currency
                ));
            }
            let revenue = self
                .revenue_cents
                .checked_add(price.amount_cents)
                .ok_or_else(|| {
                    format!(
                        "a purchase of {} cents would overflow the revenue of {} cents",
                        price.amount_cents, self.revenue_cents
                    )
                })?;
            self.currency = Some(price.currency);
            self.revenue_cents = revenue;
        }
        let at = event.occurred_at();
        self.events += 1;
        self.first_at = Some(self.first_at.map_or(at, |f| f.min(at)));
        self.last_at = Some(self.last_at.map_or(at, |l| l.max(at)));
        match event.user_id() {
            Some(u) => self.users.insert_id(u.get()),
            None => self.anonymous += 1,
        }
        match *event {
            Event::BookReviewed {
                length, old_length, ..
            } => match old_length {
                None => {
                    self.reviews_created += 1;
                    self.review_length_delta += i64::from(length);
                }
                Some(old) => {
                    self.reviews_updated += 1;
                    self.review_length_delta += i64::from(length) - i64::from(old);
                }
            },
            Event::BookRated {
                rating, old_rating, ..
            } => {
                let new = i64::from(rating);
                self.submitted_rating_sum += new;
                self.rating_distribution_delta[usize::from(rating.clamp(1, 5) - 1)] += 1;
                match old_rating {
                    None => {
                        self.ratings_created += 1;
                        self.rating_sum_delta += new;
                    }
                    Some(old) => {
                        self.ratings_updated += 1;
                        self.rating_sum_delta += new - i64::from(old);
                        self.rating_distribution_delta[usize::from(old.clamp(1, 5) - 1)] -= 1;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Which records an aggregate covers: every record of `topic`/`partition` with an offset in
/// `[first_offset, next_offset)` whose event falls in the window and concerns the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRange {
    #[serde(with = "topic_name")]
    pub topic: Topic,
    pub partition: i32,
    pub first_offset: i64,
    pub next_offset: i64,
}

impl SourceRange {
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic, self.partition)
    }
}

/// One (window, book, source partition) figure. A later aggregate for the same key that
/// covers at least as many offsets replaces an earlier one (docs/contract.md §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aggregate {
    #[serde(with = "rfc3339")]
    pub window_start: DateTime<Utc>,
    #[serde(with = "rfc3339")]
    pub window_end: DateTime<Utc>,
    pub book_id: BookId,
    pub source: SourceRange,
    pub figures: Figures,
}

impl Aggregate {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Aggregate, String> {
        let a: Aggregate = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if a.window_end <= a.window_start {
            return Err("window_end must be after window_start".into());
        }
        if a.source.next_offset < a.source.first_offset || a.source.first_offset < 0 {
            return Err("source offsets are out of order".into());
        }
        if !Topic::EVENTS.contains(&a.source.topic) {
            return Err(format!("{} is not an event topic", a.source.topic));
        }
        Ok(a)
    }

    /// The record key on `analytics.aggregated-stats`: the book id, so the topic spreads.
    pub fn key(&self) -> String {
        self.book_id.to_string()
    }
}

mod topic_name {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Topic, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Topic, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Topic::from_name(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown topic {s:?}")))
    }
}

mod opt_rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "rfc3339")] DateTime<Utc>);
        Option::<W>::deserialize(d).map(|o| o.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::Figures;
    use crate::fixtures::purchase;

    #[test]
    fn revenue_never_wraps() {
        let mut f = Figures::default();
        f.add(&purchase(1, 0, 7, 1, i64::MAX))
            .expect("the first fits");
        let err = f.add(&purchase(2, 0, 7, 2, 2)).expect_err("overflow");
        assert!(err.contains("would overflow"), "{err}");
        assert_eq!((f.events, f.revenue_cents), (1, i64::MAX));
    }
}
