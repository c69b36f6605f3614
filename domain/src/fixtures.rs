//! Compact event builders for tests: a numbered event id and a time in milliseconds since
//! the epoch. Built for folio-domain's own tests, and for other crates' tests through the
//! `fixtures` feature (a dev-dependency only; never part of a release build).

use crate::analytics::window::millis;
use crate::events::Event;
use crate::ids::{BookId, EventId, PurchaseId, UserId};
use crate::money::{Currency, Money};

/// The event id numbered `n`.
pub fn event_id(n: u128) -> EventId {
    EventId(uuid::Uuid::from_u128(n))
}

/// A view of `book` at `at_ms`, anonymous when `user` is `None`.
pub fn view(n: u128, at_ms: i64, book: i64, user: Option<i64>) -> Event {
    Event::BookViewed {
        event_id: event_id(n),
        occurred_at: millis(at_ms),
        book_id: BookId(book),
        user_id: user.map(UserId),
    }
}

/// A purchase of `book` for `cents` US cents; the purchase id is `n`.
pub fn purchase(n: u128, at_ms: i64, book: i64, user: i64, cents: i64) -> Event {
    Event::BookPurchased {
        event_id: event_id(n),
        occurred_at: millis(at_ms),
        book_id: BookId(book),
        user_id: UserId(user),
        purchase_id: PurchaseId(i64::try_from(n).unwrap_or(i64::MAX)),
        price: Money::new(cents, Currency::parse("USD").expect("USD is a currency")),
    }
}

/// A rating of `stars`, replacing `old` when it is an update.
pub fn rating(n: u128, at_ms: i64, book: i64, user: i64, stars: u8, old: Option<u8>) -> Event {
    Event::BookRated {
        event_id: event_id(n),
        occurred_at: millis(at_ms),
        book_id: BookId(book),
        user_id: UserId(user),
        rating: stars,
        old_rating: old,
    }
}
