//! The five user-action events (docs/contract.md §1) and their JSON form.
//!
//! Every event carries a unique `event_id` (UUIDv7), its `type`, `occurred_at` (RFC 3339,
//! UTC), `book_id`, `user_id` where there is one, and its own fields. The JSON is the
//! contract with other producers (a Java client or the console producer may write these),
//! so the schema in `openapi/` is generated from these types and checked by a test.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::{BookId, EventId, PurchaseId, ReviewId, UserId};
use crate::money::Money;
use crate::topics::Topic;

mod fast;

/// What every event has in common.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMeta {
    pub event_id: EventId,
    pub occurred_at: DateTime<Utc>,
}

impl EventMeta {
    /// A fresh id stamped at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        EventMeta {
            event_id: EventId::new_at(at),
            occurred_at: at,
        }
    }
}

/// A user action, as it travels on the bus. It is read through [`Wire`], not serde's
/// internally tagged form: that one buffers every record into a tree before reading it,
/// which was a fifth of the analytics' time per event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A book page was viewed. Anonymous views have no user and still count as views.
    BookViewed {
        event_id: EventId,
        #[serde(with = "rfc3339")]
        occurred_at: DateTime<Utc>,
        book_id: BookId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<UserId>,
    },
    /// A book file was downloaded.
    BookDownloaded {
        event_id: EventId,
        #[serde(with = "rfc3339")]
        occurred_at: DateTime<Utc>,
        book_id: BookId,
        user_id: UserId,
    },
    /// A purchase completed: payment confirmed.
    BookPurchased {
        event_id: EventId,
        #[serde(with = "rfc3339")]
        occurred_at: DateTime<Utc>,
        book_id: BookId,
        user_id: UserId,
        purchase_id: PurchaseId,
        price: Money,
    },
    /// A review was created (`old_length` absent) or updated (`old_length` is the length of
    /// the text it replaced). Lengths are in Unicode scalar values; the text itself stays in
    /// the bookstore.
    BookReviewed {
        event_id: EventId,
        #[serde(with = "rfc3339")]
        occurred_at: DateTime<Utc>,
        book_id: BookId,
        user_id: UserId,
        review_id: ReviewId,
        length: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_length: Option<u32>,
    },
    /// A rating was created (`old_rating` absent) or updated (`old_rating` is the value it
    /// replaced). Ratings are 1 to 5.
    BookRated {
        event_id: EventId,
        #[serde(with = "rfc3339")]
        occurred_at: DateTime<Utc>,
        book_id: BookId,
        user_id: UserId,
        rating: u8,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        old_rating: Option<u8>,
    },
}

/// The `type` tag.
#[derive(Deserialize)]
enum Kind {
    #[serde(rename = "book_viewed")]
    Viewed,
    #[serde(rename = "book_downloaded")]
    Downloaded,
    #[serde(rename = "book_purchased")]
    Purchased,
    #[serde(rename = "book_reviewed")]
    Reviewed,
    #[serde(rename = "book_rated")]
    Rated,
}

/// Every field of every event, read in one pass; [`Wire::into_event`] then takes the
/// fields the `type` needs. Fields no event of that type has are ignored (as unknown
/// fields are), but must still be of their field's type.
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: Kind,
    event_id: EventId,
    #[serde(with = "rfc3339")]
    occurred_at: DateTime<Utc>,
    book_id: BookId,
    user_id: Option<UserId>,
    purchase_id: Option<PurchaseId>,
    price: Option<Money>,
    review_id: Option<ReviewId>,
    length: Option<u32>,
    old_length: Option<u32>,
    rating: Option<u8>,
    old_rating: Option<u8>,
}

fn needs<T>(field: Option<T>, name: &str) -> Result<T, String> {
    field.ok_or_else(|| format!("missing field `{name}`"))
}

impl Wire {
    fn into_event(self) -> Result<Event, String> {
        let Wire {
            event_id,
            occurred_at,
            book_id,
            user_id,
            ..
        } = self;
        Ok(match self.kind {
            Kind::Viewed => Event::BookViewed {
                event_id,
                occurred_at,
                book_id,
                user_id,
            },
            Kind::Downloaded => Event::BookDownloaded {
                event_id,
                occurred_at,
                book_id,
                user_id: needs(user_id, "user_id")?,
            },
            Kind::Purchased => Event::BookPurchased {
                event_id,
                occurred_at,
                book_id,
                user_id: needs(user_id, "user_id")?,
                purchase_id: needs(self.purchase_id, "purchase_id")?,
                price: needs(self.price, "price")?,
            },
            Kind::Reviewed => Event::BookReviewed {
                event_id,
                occurred_at,
                book_id,
                user_id: needs(user_id, "user_id")?,
                review_id: needs(self.review_id, "review_id")?,
                length: needs(self.length, "length")?,
                old_length: self.old_length,
            },
            Kind::Rated => Event::BookRated {
                event_id,
                occurred_at,
                book_id,
                user_id: needs(user_id, "user_id")?,
                rating: needs(self.rating, "rating")?,
                old_rating: self.old_rating,
            },
        })
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Wire::deserialize(d)?
            .into_event()
            .map_err(serde::de::Error::custom)
    }
}

impl Event {
    /// The event of a completed purchase.
    pub fn purchased(meta: EventMeta, p: &crate::commerce::Purchase) -> Event {
        Event::BookPurchased {
            event_id: meta.event_id,
            occurred_at: meta.occurred_at,
            book_id: p.book_id,
            user_id: p.user_id,
            purchase_id: p.id,
            price: p.price,
        }
    }

    /// The event of a created (`old_length` none) or updated review.
    pub fn reviewed(
        meta: EventMeta,
        r: &crate::feedback::Review,
        old_length: Option<u32>,
    ) -> Event {
        Event::BookReviewed {
            event_id: meta.event_id,
            occurred_at: meta.occurred_at,
            book_id: r.book_id,
            user_id: r.user_id,
            review_id: r.id,
            length: r.text.chars().count() as u32,
            old_length,
        }
    }

    /// The event of a created (`old` none) or updated rating.
    pub fn rated(
        meta: EventMeta,
        r: &crate::feedback::Rating,
        old: Option<crate::feedback::Stars>,
    ) -> Event {
        Event::BookRated {
            event_id: meta.event_id,
            occurred_at: meta.occurred_at,
            book_id: r.book_id,
            user_id: r.user_id,
            rating: r.stars.get(),
            old_rating: old.map(|s| s.get()),
        }
    }

    pub fn meta(&self) -> EventMeta {
        let (event_id, occurred_at) = match self {
            Event::BookViewed {
                event_id,
                occurred_at,
                ..
            }
            | Event::BookDownloaded {
                event_id,
                occurred_at,
                ..
            }
            | Event::BookPurchased {
                event_id,
                occurred_at,
                ..
            }
            | Event::BookReviewed {
                event_id,
                occurred_at,
                ..
            }
            | Event::BookRated {
                event_id,
                occurred_at,
                ..
            } => (*event_id, *occurred_at),
        };
        EventMeta {
            event_id,
            occurred_at,
        }
    }

    pub fn event_id(&self) -> EventId {
        self.meta().event_id
    }

    pub fn occurred_at(&self) -> DateTime<Utc> {
        self.meta().occurred_at
    }

    pub fn book_id(&self) -> BookId {
        match self {
            Event::BookViewed { book_id, .. }
            | Event::BookDownloaded { book_id, .. }
            | Event::BookPurchased { book_id, .. }
            | Event::BookReviewed { book_id, .. }
            | Event::BookRated { book_id, .. } => *book_id,
        }
    }

    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Event::BookViewed { user_id, .. } => *user_id,
            Event::BookDownloaded { user_id, .. }
            | Event::BookPurchased { user_id, .. }
            | Event::BookReviewed { user_id, .. }
            | Event::BookRated { user_id, .. } => Some(*user_id),
        }
    }

    /// The `type` tag as it appears in JSON and in the record header.
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::BookViewed { .. } => "book_viewed",
            Event::BookDownloaded { .. } => "book_downloaded",
            Event::BookPurchased { .. } => "book_purchased",
            Event::BookReviewed { .. } => "book_reviewed",
            Event::BookRated { .. } => "book_rated",
        }
    }

    /// The topic this event is published to.
    pub fn topic(&self) -> Topic {
        match self {
            Event::BookViewed { .. } => Topic::BookViews,
            Event::BookDownloaded { .. } => Topic::BookDownloads,
            Event::BookPurchased { .. } => Topic::BookPurchases,
            Event::BookReviewed { .. } => Topic::BookReviews,
            Event::BookRated { .. } => Topic::BookRatings,
        }
    }

    /// The record key: the decimal book or user id, as the topic catalog says.
    pub fn key(&self) -> String {
        match self.topic().keyed_by() {
            crate::topics::KeyedBy::User => match self.user_id() {
                Some(u) => u.to_string(),
                None => self.book_id().to_string(),
            },
            _ => self.book_id().to_string(),
        }
    }

    /// Checks what serde cannot: ratings are 1..=5, an update's old value is in range too,
    /// prices are not negative.
    pub fn validate(&self) -> Result<(), String> {
        if self.book_id().0 <= 0 {
            return Err(format!("book_id {} is not positive", self.book_id()));
        }
        if let Some(u) = self.user_id() {
            if u.0 <= 0 {
                return Err(format!("user_id {u} is not positive"));
            }
        }
        match self {
            Event::BookRated {
                rating, old_rating, ..
            } => {
                if !(1..=5).contains(rating) {
                    return Err(format!("rating {rating} is outside 1..=5"));
                }
                if let Some(old) = old_rating {
                    if !(1..=5).contains(old) {
                        return Err(format!("old_rating {old} is outside 1..=5"));
                    }
                }
                Ok(())
            }
            Event::BookPurchased { price, .. } if price.amount_cents < 0 => {
                Err("price must not be negative".into())
            }
            _ => Ok(()),
        }
    }

    /// Decodes and validates one record value.
    pub fn decode(bytes: &[u8]) -> Result<Event, String> {
        // The common form without serde; any other, and every error, through serde.
        let event = match fast::read(bytes).map(Wire::into_event) {
            Some(Ok(event)) => event,
            _ => serde_json::from_slice(bytes).map_err(|e| e.to_string())?,
        };
        event.validate()?;
        Ok(event)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Room for a view's or a download's record (about 150 bytes) at once, instead of
        // growing through several reallocations.
        let mut out = Vec::with_capacity(192);
        // Serializing plain data with derived impls cannot fail.
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }
}

/// RFC 3339 in UTC with millisecond precision (`2026-01-02T03:04:05.678Z`). Any RFC 3339
/// offset is accepted on input and converted to UTC.
pub mod rfc3339 {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    pub fn parse(s: &str) -> Result<DateTime<Utc>, String> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("occurred_at is not RFC 3339: {e}"))
    }
}

/// One event of every type and optional-field case, for the tests of both readers.
#[cfg(test)]
pub(crate) fn samples() -> Vec<Event> {
    use crate::money::Currency;
    let at = DateTime::parse_from_rfc3339("2026-03-01T12:00:30.250Z")
        .expect("valid")
        .with_timezone(&Utc);
    let meta = EventMeta::new(at);
    let (event_id, occurred_at, book_id, user_id) = (meta.event_id, at, BookId(5), UserId(9));
    vec![
        Event::BookViewed {
            event_id,
            occurred_at,
            book_id,
            user_id: Some(user_id),
        },
        Event::BookViewed {
            event_id,
            occurred_at,
            book_id,
            user_id: None,
        },
        Event::BookDownloaded {
            event_id,
            occurred_at,
            book_id,
            user_id,
        },
        Event::BookPurchased {
            event_id,
            occurred_at,
            book_id,
            user_id,
            purchase_id: PurchaseId(3),
            price: Money::new(250, Currency::parse("EUR").expect("valid")),
        },
        Event::BookReviewed {
            event_id,
            occurred_at,
            book_id,
            user_id,
            review_id: ReviewId(4),
            length: 120,
            old_length: Some(80),
        },
        Event::BookReviewed {
            event_id,
            occurred_at,
            book_id,
            user_id,
            review_id: ReviewId(4),
            length: 120,
            old_length: None,
        },
        Event::BookRated {
            event_id,
            occurred_at,
            book_id,
            user_id,
            rating: 4,
            old_rating: Some(2),
        },
        Event::BookRated {
            event_id,
            occurred_at,
            book_id,
            user_id,
            rating: 4,
            old_rating: None,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:30.250Z")
            .expect("valid")
            .with_timezone(&Utc)
    }

    #[test]
    fn purchase_round_trips_through_json() {
        let e = Event::BookPurchased {
            event_id: EventId::new_at(at()),
            occurred_at: at(),
            book_id: BookId(7),
            user_id: UserId(3),
            purchase_id: PurchaseId(11),
            price: Money::new(1299, Currency::parse("USD").expect("valid")),
        };
        let json = String::from_utf8(e.encode()).expect("utf8");
        assert!(json.contains(r#""type":"book_purchased""#), "{json}");
        assert!(
            json.contains(r#""occurred_at":"2026-03-01T12:00:30.250Z""#),
            "{json}"
        );
        assert!(
            json.contains(r#""price":{"amount_cents":1299,"currency":"USD"}"#),
            "{json}"
        );
        assert_eq!(Event::decode(json.as_bytes()), Ok(e.clone()));
        assert_eq!(e.key(), "3");
        assert_eq!(e.topic(), Topic::BookPurchases);
    }

    #[test]
    fn anonymous_view_has_no_user_and_is_keyed_by_book() {
        let json = r#"{"type":"book_viewed","event_id":"01936f0e-7b1a-7cc0-8000-000000000001","occurred_at":"2026-03-01T13:00:30+01:00","book_id":42}"#;
        let e = Event::decode(json.as_bytes()).expect("decodes");
        assert_eq!(e.user_id(), None);
        assert_eq!(e.key(), "42");
        assert_eq!(e.occurred_at(), at() - chrono::Duration::milliseconds(250));
    }

    #[test]
    fn undecodable_records_say_why() {
        assert!(Event::decode(b"not json").is_err());
        let bad_rating = r#"{"type":"book_rated","event_id":"01936f0e-7b1a-7cc0-8000-000000000001","occurred_at":"2026-03-01T12:00:00Z","book_id":1,"user_id":2,"rating":6}"#;
        let err = Event::decode(bad_rating.as_bytes()).expect_err("rating 6");
        assert!(err.contains("outside 1..=5"), "{err}");
        let unknown = r#"{"type":"book_burned","event_id":"01936f0e-7b1a-7cc0-8000-000000000001","occurred_at":"2026-03-01T12:00:00Z","book_id":1}"#;
        assert!(Event::decode(unknown.as_bytes()).is_err());
    }

    #[test]
    fn every_event_round_trips_and_each_type_needs_its_own_fields() {
        let events = samples();
        for e in &events {
            assert_eq!(&Event::decode(&e.encode()).expect("decodes"), e);
        }
        // Each field a type needs, left out, is named; a field of another type is ignored.
        let needed = [
            ("book_downloaded", "user_id"),
            ("book_purchased", "purchase_id"),
            ("book_purchased", "price"),
            ("book_reviewed", "review_id"),
            ("book_reviewed", "length"),
            ("book_rated", "rating"),
            ("book_rated", "user_id"),
        ];
        for (kind, field) in needed {
            let e = events
                .iter()
                .find(|e| e.type_name() == kind)
                .expect("an event of each type");
            let mut v: serde_json::Value = serde_json::from_slice(&e.encode()).expect("json");
            v.as_object_mut().expect("object").remove(field);
            let err = Event::decode(v.to_string().as_bytes()).expect_err(field);
            assert!(err.contains(field), "{kind} without {field}: {err}");
        }
        let extra = r#"{"type":"book_viewed","event_id":"01936f0e-7b1a-7cc0-8000-000000000001","occurred_at":"2026-03-01T12:00:00Z","book_id":1,"rating":3,"source":"web"}"#;
        assert_eq!(
            Event::decode(extra.as_bytes()).expect("decodes").book_id(),
            BookId(1)
        );
        let null_user = r#"{"type":"book_downloaded","event_id":"01936f0e-7b1a-7cc0-8000-000000000001","occurred_at":"2026-03-01T12:00:00Z","book_id":1,"user_id":null}"#;
        assert!(Event::decode(null_user.as_bytes()).is_err());
    }
}
