//! Contract suites for the storage ports: one async check per port (or group of ports that
//! only make sense together), written against the traits alone so every implementation
//! runs the same checks: the SQL store on SQLite and PostgreSQL, and the in-memory fakes.
//!
//! Each check expects a fresh, empty store and asserts exact values; it panics (through
//! `assert_eq!`) or returns an error on the first mismatch. [`contract_suite!`] turns all of
//! them into `#[tokio::test]` functions for one store type.
//!
//! Times used here are whole milliseconds: that is the precision events carry on the wire,
//! and the precision the SQL store keeps.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use folio_domain::accounts::{Email, NewUser, Role, User};
use folio_domain::analytics::{Aggregate, Figures, Sketch, SourceRange};
use folio_domain::catalog::{Book, BookDraft, BookFileUpload, BookFilter, PageRequest};
use folio_domain::commerce::{ConfirmOutcome, PurchaseStatus};
use folio_domain::events::{Event, EventMeta};
use folio_domain::feedback::{ReviewText, Stars};
use folio_domain::ids::{BookId, PurchaseId, UserId};
use folio_domain::money::{Currency, Money};
use folio_domain::ports::{
    BookFileStore, BookRepository, Outbox, PurchaseRepository, RatingRepository, Readiness,
    ReviewRepository, StatsQuery, StatsSink, UpsertReport, UserRepository,
};
use folio_domain::stats::{
    BookFigures, GenreStats, PopularBook, PopularSort, StoredWindow, TimeRange, TopBook, TopGenre,
};
use folio_domain::topics::Topic;
use folio_domain::Error;

use crate::oracle::{rank_popular, tally_by_window, top, Tally};

/// Generates one `#[tokio::test]` per contract check for a store type that implements
/// every storage port.
///
/// `$setup` is an async function returning `anyhow::Result<(G, S)>`: `S` is the store and
/// `G` anything that must outlive the test (a temporary directory, say).
///
/// ```ignore
/// folio_tests::contract_suite!(sqlite_store);
/// ```
#[macro_export]
macro_rules! contract_suite {
    ($setup:path) => {
        $crate::contract_suite!(@tests $setup;
            users(users),
            books(books),
            book_files(books, files),
            purchases(users, books, purchases, outbox),
            reviews(users, books, reviews, outbox),
            ratings(users, books, ratings, outbox),
            outbox(users, books, ratings, outbox),
            stats_sink(sink, query),
            stats_corrections(books, sink, query),
            stats_large_batches(books, sink, query),
            stats_query(books, sink, query),
            stats_match_fold(books, sink, query),
            stats_rollups_stay_exact(books, sink, query, retention),
            readiness(readiness),
            concurrent_completion(users, books, purchases, outbox),
            concurrent_rating_updates(users, books, ratings),
            concurrent_claims(users, books, ratings, outbox),
            concurrent_upserts(sink, query),
        );
    };
    (@tests $setup:path; $($check:ident($($port:ident),*)),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() -> anyhow::Result<()> {
                let (_guard, store) = $setup().await?;
                $( let $port = &store; )*
                $crate::contract::$check($($port),*).await
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// 2026-03-01T12:00:00Z plus `secs` seconds.
pub fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .unwrap_or_default()
        + chrono::Duration::seconds(secs)
}

pub fn usd() -> Currency {
    Currency::parse("USD").unwrap_or_else(|_| unreachable!("USD is a valid currency code"))
}

pub async fn new_user(users: &dyn UserRepository, email: &str) -> Result<User> {
    let user = NewUser {
        email: Email::parse(email)?,
        display_name: format!("reader {email}"),
        role: Role::User,
        password_hash: format!("hash-of-{email}"),
    };
    Ok(users.create(user, at(0)).await?)
}

pub async fn new_book(
    books: &dyn BookRepository,
    title: &str,
    genre: &str,
    price_cents: i64,
) -> Result<Book> {
    let draft = BookDraft::new(
        title,
        "An Author",
        genre,
        "A description.",
        price_cents,
        "USD",
        usd(),
    )?;
    Ok(books.create(draft, at(0)).await?)
}

fn is_duplicate<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Duplicate(_)))
}

fn is_not_found<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::NotFound { .. }))
}

fn is_conflict<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Conflict(_)))
}

/// Everything waiting in the outbox, oldest first, as a relay at `now` publishes it:
/// claimed, then marked published.
async fn publish_all(outbox: &dyn Outbox, now: DateTime<Utc>) -> Result<Vec<Event>> {
    let entries = outbox.claim(1000, Duration::from_secs(30), now).await?;
    let ids: Vec<i64> = entries.iter().map(|e| e.id).collect();
    outbox.mark_published(&ids, now).await?;
    Ok(entries.into_iter().map(|e| e.event).collect())
}

// ---------------------------------------------------------------------------------------
// Repositories
// ---------------------------------------------------------------------------------------

/// Users: unique e-mail, lookups, count, and `ensure_admin` creating or promoting.
pub async fn users(users: &dyn UserRepository) -> Result<()> {
    let ann = new_user(users, "ann@example.org").await?;
    assert_eq!(ann.email.as_str(), "ann@example.org");
    assert_eq!(ann.role, Role::User);
    assert_eq!(ann.password_hash, "hash-of-ann@example.org");
    assert_eq!(ann.created_at, at(0));
    assert_eq!(users.get(ann.id).await?, Some(ann.clone()));
    assert_eq!(
        users
            .find_by_email(&Email::parse("ANN@example.org")?)
            .await?,
        Some(ann.clone())
    );
    assert_eq!(
        users
            .find_by_email(&Email::parse("bob@example.org")?)
            .await?,
        None
    );
    assert_eq!(users.get(UserId(ann.id.get() + 1000)).await?, None);

    let twin = NewUser {
        email: Email::parse("Ann@Example.org")?,
        display_name: "another Ann".into(),
        role: Role::User,
        password_hash: "other".into(),
    };
    assert!(
        is_duplicate(&users.create(twin, at(1)).await),
        "an e-mail is registered once"
    );
    assert_eq!(users.count().await?, 1);

    let admin_email = Email::parse("admin@example.org")?;
    let admin = users
        .ensure_admin(&admin_email, "admin-hash", at(5))
        .await?;
    assert_eq!(admin.role, Role::Admin);
    assert_eq!(admin.password_hash, "admin-hash");
    let again = users
        .ensure_admin(&admin_email, "admin-hash-2", at(6))
        .await?;
    assert_eq!(
        again.id, admin.id,
        "ensure_admin must not create a second account"
    );
    assert_eq!(again.password_hash, "admin-hash-2");

    let promoted = users.ensure_admin(&ann.email, "new-hash", at(7)).await?;
    assert_eq!(promoted.id, ann.id);
    assert_eq!(promoted.role, Role::Admin);
    assert_eq!(promoted.password_hash, "new-hash");
    assert_eq!(users.count().await?, 2);
    Ok(())
}

/// The catalog: paging with totals, genre and title filters, update, soft delete, and the
/// revision that every change moves and nothing else does.
pub async fn books(books: &dyn BookRepository) -> Result<()> {
    let mut revision = books.revision().await?;
    let dune = new_book(books, "Dune", "SF", 1299).await?;
    revision_moved(books, &mut revision, true, "a new book").await?;
    let emma = new_book(books, "Emma", "Classics", 0).await?;
    let neuro = new_book(books, "Neuromancer", "SF", 999).await?;
    revision_moved(books, &mut revision, true, "two new books").await?;
    assert_eq!(dune.title, "Dune");
    assert_eq!(dune.price, Money::new(1299, usd()));
    assert_eq!(dune.file, None);
    assert_eq!((dune.created_at, dune.updated_at), (at(0), at(0)));
    assert!(emma.is_free());
    assert_eq!(books.get(dune.id).await?, Some(dune.clone()));

    let first = books
        .list(PageRequest::new(Some(1), Some(2))?, &BookFilter::default())
        .await?;
    assert_eq!(first.total, 3);
    assert_eq!((first.page, first.per_page), (1, 2));
    assert_eq!(
        first.items.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![dune.id, emma.id]
    );
    let second = books
        .list(PageRequest::new(Some(2), Some(2))?, &BookFilter::default())
        .await?;
    assert_eq!(second.total, 3);
    assert_eq!(
        second.items.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![neuro.id]
    );
    let beyond = books
        .list(PageRequest::new(Some(3), Some(2))?, &BookFilter::default())
        .await?;
    assert_eq!((beyond.total, beyond.items.len()), (3, 0));
    let sf_filter = BookFilter::new(Some("SF"), None)?;
    let sf = books
        .list(PageRequest::new(None, None)?, &sf_filter)
        .await?;
    assert_eq!(sf.total, 2);
    assert_eq!(
        sf.items.iter().map(|b| b.id).collect::<Vec<_>>(),
        vec![dune.id, neuro.id]
    );
    // A title search ignores ASCII case, matches inside the title and takes `%` and `_`
    // literally; it combines with the genre.
    let titled = |genre: Option<&str>, title: &str| BookFilter::new(genre, Some(title));
    for (genre, title, expected) in [
        (None, "uNe", vec![dune.id]),
        (None, "m", vec![emma.id, neuro.id]),
        (Some("SF"), "m", vec![neuro.id]),
        (None, "%", vec![]),
        (None, "D_ne", vec![]),
        (None, "Neuromancer!", vec![]),
    ] {
        let found = books
            .list(PageRequest::new(None, None)?, &titled(genre, title)?)
            .await?;
        assert_eq!(
            (
                found.total,
                found.items.iter().map(|b| b.id).collect::<Vec<_>>()
            ),
            (expected.len() as u64, expected.clone()),
            "genre {genre:?}, title {title:?}"
        );
    }

    let draft = BookDraft::new(
        "Dune Messiah",
        "Frank Herbert",
        "SF",
        "Sequel.",
        1499,
        "USD",
        usd(),
    )?;
    let updated = books.update(dune.id, draft, at(60)).await?;
    assert_eq!(updated.id, dune.id);
    assert_eq!(updated.title, "Dune Messiah");
    assert_eq!(updated.author, "Frank Herbert");
    assert_eq!(updated.price.amount_cents, 1499);
    assert_eq!((updated.created_at, updated.updated_at), (at(0), at(60)));
    assert_eq!(books.get(dune.id).await?, Some(updated));
    revision_moved(books, &mut revision, true, "an update").await?;

    books.delete(neuro.id, at(120)).await?;
    revision_moved(books, &mut revision, true, "a removal").await?;
    assert_eq!(books.get(neuro.id).await?, None);
    let live = books
        .list(PageRequest::new(None, None)?, &BookFilter::default())
        .await?;
    assert_eq!(live.total, 2);
    assert_eq!(
        books
            .list(PageRequest::new(None, None)?, &sf_filter)
            .await?
            .total,
        1
    );
    assert!(
        is_not_found(&books.delete(neuro.id, at(121)).await),
        "deleting twice is NotFound"
    );
    let draft = BookDraft::new("Count Zero", "W. Gibson", "SF", "", 999, "USD", usd())?;
    assert!(
        is_not_found(&books.update(neuro.id, draft.clone(), at(122)).await),
        "a deleted book cannot be updated"
    );
    assert!(is_not_found(
        &books.update(BookId(999_999), draft, at(122)).await
    ));
    assert!(is_not_found(&books.delete(BookId(999_999), at(122)).await));
    revision_moved(books, &mut revision, false, "reads and refused changes").await?;
    Ok(())
}

/// Checks that the catalog's revision moved past `seen` (`moved`) or stayed on it, and
/// remembers the new one.
async fn revision_moved(
    books: &dyn BookRepository,
    seen: &mut u64,
    moved: bool,
    what: &str,
) -> Result<()> {
    let now = books.revision().await?;
    if moved {
        ensure!(
            now > *seen,
            "{what} must move the revision ({seen} -> {now})"
        );
    } else {
        ensure!(
            now == *seen,
            "{what} must leave the revision ({seen} -> {now})"
        );
    }
    *seen = now;
    Ok(())
}

/// Book files: absent until uploaded, byte-identical when read back in chunks, replaceable.
pub async fn book_files(books: &dyn BookRepository, files: &dyn BookFileStore) -> Result<()> {
    let book = new_book(books, "Dune", "SF", 1299).await?;
    let mut revision = books.revision().await?;
    assert!(
        files.open(book.id).await?.is_none(),
        "a book without a file opens as None"
    );

    let bytes: Vec<u8> = (0..600 * 1024u32).map(|i| (i % 251) as u8).collect();
    let info = files
        .put(
            book.id,
            BookFileUpload::new("dune.epub", "application/epub+zip", bytes.clone())?,
        )
        .await?;
    assert_eq!(info.file_name, "dune.epub");
    assert_eq!(info.content_type, "application/epub+zip");
    assert_eq!(info.size_bytes, 600 * 1024);
    assert_eq!(
        books.get(book.id).await?.and_then(|b| b.file),
        Some(info.clone())
    );
    revision_moved(books, &mut revision, true, "an upload").await?;

    let (opened, mut chunks) = files
        .open(book.id)
        .await?
        .context("the uploaded file opens")?;
    assert_eq!(opened, info);
    let mut read = Vec::new();
    while let Some(chunk) = chunks.next_chunk().await? {
        ensure!(!chunk.is_empty(), "chunks are never empty");
        read.extend_from_slice(&chunk);
    }
    ensure!(
        read == bytes,
        "the file must come back byte-identical ({} of {} bytes)",
        read.len(),
        bytes.len()
    );
    assert_eq!(chunks.next_chunk().await?, None, "the end stays the end");

    let info = files
        .put(
            book.id,
            BookFileUpload::new("dune-2.txt", "text/plain", b"second edition".to_vec())?,
        )
        .await?;
    assert_eq!(info.size_bytes, 14);
    let (opened, mut chunks) = files
        .open(book.id)
        .await?
        .context("the replaced file opens")?;
    assert_eq!(opened.file_name, "dune-2.txt");
    assert_eq!(chunks.next_chunk().await?, Some(b"second edition".to_vec()));
    assert_eq!(chunks.next_chunk().await?, None);
    Ok(())
}

/// Purchases: one per (user, book), completion is idempotent and writes exactly one
/// outbox event, failed purchases can be retried.
pub async fn purchases(
    users: &dyn UserRepository,
    books: &dyn BookRepository,
    purchases: &dyn PurchaseRepository,
    outbox: &dyn Outbox,
) -> Result<()> {
    let ann = new_user(users, "ann@example.org").await?;
    let dune = new_book(books, "Dune", "SF", 1299).await?;
    let emma = new_book(books, "Emma", "Classics", 499).await?;

    let pending = purchases
        .create_pending(ann.id, dune.id, dune.price, at(10))
        .await?;
    assert_eq!(pending.status, PurchaseStatus::Pending);
    assert_eq!(
        (pending.user_id, pending.book_id, pending.price),
        (ann.id, dune.id, Money::new(1299, usd()))
    );
    assert_eq!(
        (
            pending.payment_ref.clone(),
            pending.created_at,
            pending.completed_at
        ),
        (None, at(10), None)
    );
    assert_eq!(purchases.get(pending.id).await?, Some(pending.clone()));
    assert_eq!(
        purchases.find(ann.id, dune.id).await?,
        Some(pending.clone())
    );
    assert_eq!(purchases.find(ann.id, emma.id).await?, None);
    assert!(is_duplicate(
        &purchases
            .create_pending(ann.id, dune.id, dune.price, at(11))
            .await
    ));
    assert_eq!(
        outbox.backlog().await?,
        0,
        "a pending purchase emits nothing"
    );

    let meta = EventMeta::new(at(20));
    let done = match purchases.complete(pending.id, "pay-1", meta).await? {
        ConfirmOutcome::Completed(p) => p,
        other => return Err(anyhow!("first completion must complete, got {other:?}")),
    };
    assert_eq!(done.id, pending.id);
    assert_eq!(done.status, PurchaseStatus::Completed);
    assert_eq!(done.payment_ref.as_deref(), Some("pay-1"));
    assert_eq!(done.completed_at, Some(at(20)));
    // A retried webhook: same purchase, nothing new in the outbox.
    match purchases
        .complete(pending.id, "pay-1", EventMeta::new(at(25)))
        .await?
    {
        ConfirmOutcome::AlreadyCompleted(p) => assert_eq!(p, done),
        other => {
            return Err(anyhow!(
                "second completion must be AlreadyCompleted, got {other:?}"
            ))
        }
    }
    assert_eq!(outbox.backlog().await?, 1);
    assert_eq!(
        publish_all(outbox, at(30)).await?,
        vec![Event::purchased(meta, &done)]
    );

    assert!(is_duplicate(
        &purchases
            .create_pending(ann.id, dune.id, dune.price, at(40))
            .await
    ));
    assert!(
        is_conflict(&purchases.fail(done.id, "late-decline").await),
        "a completed purchase cannot fail"
    );
    assert!(is_not_found(
        &purchases
            .complete(PurchaseId(999_999), "pay-x", EventMeta::new(at(41)))
            .await
    ));

    let attempt = purchases
        .create_pending(ann.id, emma.id, emma.price, at(50))
        .await?;
    let failed = purchases.fail(attempt.id, "declined").await?;
    assert_eq!(failed.status, PurchaseStatus::Failed);
    assert_eq!(
        purchases.find(ann.id, emma.id).await?.map(|p| p.status),
        Some(PurchaseStatus::Failed)
    );
    assert!(is_conflict(
        &purchases
            .complete(attempt.id, "pay-2", EventMeta::new(at(51)))
            .await
    ));
    let retry = purchases
        .create_pending(ann.id, emma.id, emma.price, at(60))
        .await?;
    assert_eq!(retry.status, PurchaseStatus::Pending);
    assert_eq!(purchases.find(ann.id, emma.id).await?, Some(retry.clone()));
    let meta = EventMeta::new(at(61));
    let ConfirmOutcome::Completed(bought) = purchases.complete(retry.id, "pay-3", meta).await?
    else {
        return Err(anyhow!("the retried purchase must complete"));
    };
    assert_eq!(
        publish_all(outbox, at(62)).await?,
        vec![Event::purchased(meta, &bought)]
    );
    assert_eq!(outbox.backlog().await?, 0);
    Ok(())
}

/// Reviews: one per (user, book); create and update write their events, the update with
/// the length of the text it replaced.
pub async fn reviews(
    users: &dyn UserRepository,
    books: &dyn BookRepository,
    reviews: &dyn ReviewRepository,
    outbox: &dyn Outbox,
) -> Result<()> {
    let ann = new_user(users, "ann@example.org").await?;
    let bob = new_user(users, "bob@example.org").await?;
    let dune = new_book(books, "Dune", "SF", 1299).await?;

    let created_meta = EventMeta::new(at(10));
    let review = reviews
        .create(
            dune.id,
            ann.id,
            &ReviewText::parse("Great book")?,
            created_meta,
        )
        .await?;
    assert_eq!(
        (review.book_id, review.user_id, review.text.as_str()),
        (dune.id, ann.id, "Great book")
    );
    assert_eq!((review.created_at, review.updated_at), (at(10), at(10)));
    assert!(is_duplicate(
        &reviews
            .create(
                dune.id,
                ann.id,
                &ReviewText::parse("Again")?,
                EventMeta::new(at(11))
            )
            .await
    ));

    let updated_meta = EventMeta::new(at(20));
    let update = reviews
        .update(
            dune.id,
            ann.id,
            &ReviewText::parse("Great book, long middle part")?,
            updated_meta,
        )
        .await?;
    assert_eq!(update.old_length, 10);
    assert_eq!(update.review.id, review.id);
    assert_eq!(update.review.text, "Great book, long middle part");
    assert_eq!(
        (update.review.created_at, update.review.updated_at),
        (at(10), at(20))
    );
    assert!(is_not_found(
        &reviews
            .update(
                dune.id,
                bob.id,
                &ReviewText::parse("Hm")?,
                EventMeta::new(at(21))
            )
            .await
    ));

    let m3 = EventMeta::new(at(30));
    let second = reviews
        .create(dune.id, bob.id, &ReviewText::parse("Too long")?, m3)
        .await?;
    let page = reviews
        .list_for_book(dune.id, PageRequest::new(Some(1), Some(1))?)
        .await?;
    assert_eq!(page.total, 2);
    assert_eq!(page.items, vec![update.review.clone()]);
    let page = reviews
        .list_for_book(dune.id, PageRequest::new(Some(2), Some(1))?)
        .await?;
    assert_eq!(page.items, vec![second.clone()]);

    assert_eq!(
        publish_all(outbox, at(40)).await?,
        vec![
            Event::reviewed(created_meta, &review, None),
            Event::reviewed(updated_meta, &update.review, Some(10)),
            Event::reviewed(m3, &second, None),
        ]
    );
    Ok(())
}

/// Ratings: one per (user, book); an update returns the value it replaced and its event
/// carries it as `old_rating`.
pub async fn ratings(
    users: &dyn UserRepository,
    books: &dyn BookRepository,
    ratings: &dyn RatingRepository,
    outbox: &dyn Outbox,
) -> Result<()> {
    let ann = new_user(users, "ann@example.org").await?;
    let bob = new_user(users, "bob@example.org").await?;
    let dune = new_book(books, "Dune", "SF", 1299).await?;

    let m1 = EventMeta::new(at(10));
    let rating = ratings
        .create(dune.id, ann.id, Stars::parse(4)?, m1)
        .await?;
    assert_eq!(
        (rating.book_id, rating.user_id, rating.stars.get()),
        (dune.id, ann.id, 4)
    );
    assert_eq!((rating.created_at, rating.updated_at), (at(10), at(10)));
    assert!(is_duplicate(
        &ratings
            .create(dune.id, ann.id, Stars::parse(5)?, EventMeta::new(at(11)))
            .await
    ));

    let m2 = EventMeta::new(at(20));
    let first = ratings
        .update(dune.id, ann.id, Stars::parse(2)?, m2)
        .await?;
    assert_eq!(first.old.get(), 4);
    assert_eq!(first.rating.stars.get(), 2);
    assert_eq!(
        (first.rating.created_at, first.rating.updated_at),
        (at(10), at(20))
    );
    let m3 = EventMeta::new(at(30));
    let second = ratings
        .update(dune.id, ann.id, Stars::parse(5)?, m3)
        .await?;
    assert_eq!((second.old.get(), second.rating.stars.get()), (2, 5));
    assert!(is_not_found(
        &ratings
            .update(dune.id, bob.id, Stars::parse(3)?, EventMeta::new(at(31)))
            .await
    ));

    let events = publish_all(outbox, at(40)).await?;
    assert_eq!(
        events,
        vec![
            Event::rated(m1, &rating, None),
            Event::rated(m2, &first.rating, Some(Stars::parse(4)?)),
            Event::rated(m3, &second.rating, Some(Stars::parse(2)?)),
        ]
    );
    match &events[1] {
        Event::BookRated {
            rating: 2,
            old_rating: Some(4),
            ..
        } => {}
        other => {
            return Err(anyhow!(
                "the update's event must carry old_rating 4, got {other:?}"
            ))
        }
    }
    Ok(())
}

/// The outbox: oldest first, leases keep an entry from a second relay until they run out,
/// published entries are never claimed again.
pub async fn outbox(
    users: &dyn UserRepository,
    books: &dyn BookRepository,
    ratings: &dyn RatingRepository,
    outbox: &dyn Outbox,
) -> Result<()> {
    let dune = new_book(books, "Dune", "SF", 1299).await?;
    let mut written = Vec::new();
    for (i, email) in ["a@example.org", "b@example.org", "c@example.org"]
        .into_iter()
        .enumerate()
    {
        let user = new_user(users, email).await?;
        let meta = EventMeta::new(at(i as i64));
        let r = ratings
            .create(dune.id, user.id, Stars::parse(i as i64 + 1)?, meta)
            .await?;
        written.push(Event::rated(meta, &r, None));
    }
    assert_eq!(outbox.backlog().await?, 3);
    let lease = Duration::from_secs(30);

    let first = outbox.claim(2, lease, at(100)).await?;
    assert_eq!(first.len(), 2);
    ensure!(first[0].id < first[1].id, "claims come oldest first");
    assert_eq!(
        first.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        written[..2].to_vec()
    );

    // A second relay at the same moment gets only what the first did not lease.
    let second = outbox.claim(10, lease, at(100)).await?;
    assert_eq!(
        second.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        written[2..].to_vec()
    );
    assert!(
        outbox.claim(10, lease, at(120)).await?.is_empty(),
        "leased entries are not handed out"
    );

    outbox.mark_published(&[first[0].id], at(125)).await?;
    assert_eq!(outbox.backlog().await?, 2);
    outbox.mark_published(&[], at(125)).await?;

    // After the lease runs out, unpublished entries are claimable again.
    let retry = outbox.claim(10, lease, at(131)).await?;
    assert_eq!(
        retry.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![first[1].id, second[0].id]
    );
    outbox
        .mark_published(&[first[1].id, second[0].id], at(132))
        .await?;
    assert_eq!(outbox.backlog().await?, 0);
    assert!(
        outbox.claim(10, lease, at(1000)).await?.is_empty(),
        "published entries are never claimed"
    );
    Ok(())
}

/// Readiness: the store names itself and answers when reachable.
pub async fn readiness(r: &dyn Readiness) -> Result<()> {
    assert_eq!(r.name(), "database");
    r.check().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Concurrency: requests racing each other through one store (one task, many connections)
// ---------------------------------------------------------------------------------------

/// Six retried webhooks for one purchase racing each other: it completes once, with one
/// outbox event.
pub async fn concurrent_completion(
    users: &dyn UserRepository,
    books: &dyn BookRepository,
    purchases: &dyn PurchaseRepository,
    outbox: &dyn Outbox,
) -> Result<()> {
    let ann = new_user(users, "ann@example.org").await?;
    let dune = new_book(books, "Dune", "SF", 1299).await?;
    let pending = purchases
        .create_pending(ann.id, dune.id, dune.price, at(10))
        .await?;
    let complete = |i: i64| purchases.complete(pending.id, "pay-1", EventMeta::new(at(20 + i)));
    let (a, b, c, d, e, f) = tokio::join!(
        complete(0),
        complete(1),
        complete(2),
        complete(3),
        complete(4),
        complete(5)
    );
    let outcomes = [a?, b?, c?, d?, e?, f?];
    let completed = outcomes
        .iter()
        .filter(|o| matches!(o, ConfirmOutcome::Completed(_)))
        .count();
    assert_eq!(
        completed, 1,
        "exactly one webhook completes the purchase: {outcomes:?}"
    );
    assert_eq!(outbox.backlog().await?, 1, "one purchase, one event");
    Ok(())
}

/// Six updates of one rating racing each other: each reads the value the previous one
/// wrote, so the old values chain from the first rating to the last.
pub async fn concurrent_rating_updates(
    users: &dyn UserRepository,
    books: &dyn BookRepository,
    ratings: &dyn RatingRepository,
) -> Result<()> {
    let ann = new_user(users, "ann@example.org").await?;
    let dune = new_book(books, "Dune", "SF", 1299).await?;
    ratings
        .create(dune.id, ann.id, Stars::parse(1)?, EventMeta::new(at(0)))
        .await?;
    let update = |stars: i64| async move {
        ratings
            .update(
                dune.id,
                ann.id,
                Stars::parse(stars)?,
                EventMeta::new(at(stars)),
            )
            .await
            .map_err(anyhow::Error::from)
    };
    let (a, b, c, d, e, f) = tokio::join!(
        update(2),
        update(3),
        update(4),
        update(5),
        update(2),
        update(3)
    );
    let updates = [a?, b?, c?, d?, e?, f?];
    // Serialisable means the olds are the first value plus every new value but the last:
    // counting +1 for the first value and each new one, -1 for each old one leaves exactly
    // the last value. Two updates reading the same value would drive a count below zero
    // (no update writes 1, so the first value can be read only once).
    let mut balance = [0i32; 6];
    balance[1] += 1;
    for u in &updates {
        balance[usize::from(u.rating.stars.get())] += 1;
        balance[usize::from(u.old.get())] -= 1;
    }
    ensure!(
        balance.iter().all(|&b| b >= 0) && balance[1] == 0,
        "updates lost one another: {updates:?}"
    );
    Ok(())
}

/// Three relays claiming at the same moment never get the same entry, and together with a
/// follow-up claim they get every entry exactly once.
pub async fn concurrent_claims(
    users: &dyn UserRepository,
    books: &dyn BookRepository,
    ratings: &dyn RatingRepository,
    outbox: &dyn Outbox,
) -> Result<()> {
    let dune = new_book(books, "Dune", "SF", 1299).await?;
    for i in 0..10 {
        let user = new_user(users, &format!("reader{i}@example.org")).await?;
        ratings
            .create(dune.id, user.id, Stars::parse(3)?, EventMeta::new(at(i)))
            .await?;
    }
    let lease = Duration::from_secs(30);
    let (a, b, c) = tokio::join!(
        outbox.claim(4, lease, at(100)),
        outbox.claim(4, lease, at(100)),
        outbox.claim(4, lease, at(100)),
    );
    let mut ids: Vec<i64> = [a?, b?, c?].into_iter().flatten().map(|e| e.id).collect();
    ids.extend(
        outbox
            .claim(100, lease, at(100))
            .await?
            .into_iter()
            .map(|e| e.id),
    );
    let claimed = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), claimed, "an entry was handed to two relays");
    assert_eq!(claimed, 10, "every entry is claimed once");
    Ok(())
}

/// Two ingesters storing overlapping batches at once: every key ends with the aggregate
/// covering the most offsets, and each report accounts for every aggregate it was given.
pub async fn concurrent_upserts(sink: &dyn StatsSink, query: &dyn StatsQuery) -> Result<()> {
    let batch = |extra: i64| -> Vec<Aggregate> {
        (1..=20)
            .map(|book| {
                let n = 2 + extra + book % 3;
                aggregate(
                    0,
                    book,
                    Topic::BookViews,
                    0,
                    (0, n),
                    views(n as u64, 0, &[book], 1, 2),
                )
            })
            .collect()
    };
    let (small, large) = (batch(0), batch(5));
    let (a, b, c) = tokio::join!(
        sink.upsert(&small),
        sink.upsert(&large),
        sink.upsert(&small)
    );
    for (r, given) in [(a?, 20), (b?, 20), (c?, 20)] {
        assert_eq!(r.inserted + r.replaced + r.ignored, given, "{r:?}");
    }
    for book in 1..=20 {
        let stats = query.book(BookId(book), TimeRange::ALL).await?;
        assert_eq!(
            stats.figures.views,
            (7 + book % 3) as u64,
            "book {book} keeps the larger aggregate"
        );
    }
    assert_eq!(sink.upsert(&large).await?, report(0, 0, 20));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

/// Window length of the hand-made aggregates.
const WINDOW: i64 = 60;

/// A sketch of exactly these user ids.
pub fn users_sketch(ids: &[i64]) -> Sketch {
    let mut s = Sketch::new();
    for &id in ids {
        s.insert_id(id);
    }
    s
}

/// An aggregate of the window starting `window` seconds after [`at`]`(0)`.
pub fn aggregate(
    window: i64,
    book: i64,
    topic: Topic,
    partition: i32,
    offsets: (i64, i64),
    figures: Figures,
) -> Aggregate {
    Aggregate {
        window_start: at(window),
        window_end: at(window + WINDOW),
        book_id: BookId(book),
        source: SourceRange {
            topic,
            partition,
            first_offset: offsets.0,
            next_offset: offsets.1,
        },
        figures,
    }
}

/// Views: `events` in total, `anonymous` of them without a user.
fn views(events: u64, anonymous: u64, users: &[i64], first: i64, last: i64) -> Figures {
    Figures {
        events,
        anonymous,
        users: users_sketch(users),
        first_at: Some(at(first)),
        last_at: Some(at(last)),
        ..Figures::default()
    }
}

/// The sink: exact insert / replace / ignore counts, idempotence, and duplicates within
/// one batch decided in order.
pub async fn stats_sink(sink: &dyn StatsSink, query: &dyn StatsQuery) -> Result<()> {
    let a = aggregate(
        0,
        1,
        Topic::BookViews,
        0,
        (0, 5),
        views(5, 0, &[1, 2], 1, 5),
    );
    let b = aggregate(0, 1, Topic::BookViews, 1, (0, 2), views(2, 1, &[3], 2, 3));
    let c = aggregate(
        0,
        2,
        Topic::BookDownloads,
        0,
        (10, 12),
        views(2, 0, &[1], 4, 9),
    );
    assert_eq!(sink.upsert(&[]).await?, UpsertReport::default());
    assert_eq!(
        sink.upsert(&[a.clone(), b.clone(), c.clone()]).await?,
        report(3, 0, 0)
    );
    let before = query.book(BookId(1), TimeRange::ALL).await?;
    assert_eq!(
        (before.figures.views, before.figures.unique_viewers),
        (7, 3)
    );

    assert_eq!(
        sink.upsert(&[a.clone(), b.clone(), c.clone()]).await?,
        report(0, 0, 3),
        "a replay is ignored"
    );
    assert_eq!(
        query.book(BookId(1), TimeRange::ALL).await?,
        before,
        "a replay changes nothing"
    );

    // The same partition's figure, covering more offsets, replaces the stored one.
    let a_more = aggregate(
        0,
        1,
        Topic::BookViews,
        0,
        (0, 8),
        views(8, 0, &[1, 2, 4], 1, 7),
    );
    assert_eq!(
        sink.upsert(std::slice::from_ref(&a_more)).await?,
        report(0, 1, 0)
    );
    let after = query.book(BookId(1), TimeRange::ALL).await?;
    assert_eq!(
        (
            after.figures.views,
            after.figures.unique_viewers,
            after.figures.anonymous_views
        ),
        (10, 4, 1)
    );
    assert_eq!(after.figures.last_view_at, Some(at(7)));

    // An older figure arriving late never overwrites a newer one.
    assert_eq!(
        sink.upsert(std::slice::from_ref(&a)).await?,
        report(0, 0, 1)
    );
    assert_eq!(query.book(BookId(1), TimeRange::ALL).await?, after);

    // Within one batch, aggregates are decided in order.
    let d1 = aggregate(
        WINDOW,
        3,
        Topic::BookViews,
        2,
        (20, 23),
        views(3, 0, &[7], 61, 62),
    );
    let d2 = aggregate(
        WINDOW,
        3,
        Topic::BookViews,
        2,
        (20, 24),
        views(4, 0, &[7, 8], 61, 63),
    );
    assert_eq!(
        sink.upsert(&[d1.clone(), d2.clone(), d1.clone(), d2])
            .await?,
        report(1, 1, 2)
    );
    let d = query.book(BookId(3), TimeRange::ALL).await?;
    assert_eq!((d.figures.views, d.figures.unique_viewers), (4, 2));
    Ok(())
}

/// Corrections and containment: within one (window, book, topic, partition), a disjoint
/// range adds (a correction), a covered one is ignored (a replay), a covering one replaces
/// every stored range inside it. Figures are written out by hand from the events each
/// aggregate stands for, not computed with the domain's fold.
pub async fn stats_corrections(
    books: &dyn BookRepository,
    sink: &dyn StatsSink,
    query: &dyn StatsQuery,
) -> Result<()> {
    let dune = new_book(books, "Dune", "SF", 1299).await?.id;
    let d = dune.get();
    let p0 = |offsets, f| aggregate(0, d, Topic::BookViews, 0, offsets, f);
    // The window as first closed: offsets 0..5, views by users 1 and 2 at 5 s and 20 s
    // and one more by user 1.
    let window = p0((0, 5), views(3, 0, &[1, 2], 5, 20));
    // Two corrections: late views at offsets 7 and 8 (user 3 at 2 s, anonymous at 30 s),
    // and at 9..12 one by user 1 at 40 s.
    let c1 = p0((7, 9), views(2, 1, &[3], 2, 30));
    let c2 = p0((9, 12), views(1, 0, &[1], 40, 40));
    assert_eq!(
        sink.upsert(&[window.clone(), c1.clone(), c2.clone()])
            .await?,
        report(3, 0, 0),
        "corrections add"
    );
    let f = query.book(dune, TimeRange::ALL).await?.figures;
    assert_eq!(
        (
            f.views,
            f.anonymous_views,
            f.unique_viewers,
            f.first_view_at,
            f.last_view_at
        ),
        (6, 1, 3, Some(at(2)), Some(at(40)))
    );
    // Replays of a correction, whole or in part, change nothing.
    let part = p0((7, 8), views(1, 0, &[3], 2, 2));
    assert_eq!(sink.upsert(&[c1.clone(), part]).await?, report(0, 0, 2));
    assert_eq!(query.book(dune, TimeRange::ALL).await?.figures, f);

    // A replay that counted the first correction's views in the window itself.
    let replayed = p0((0, 10), views(5, 1, &[1, 2, 3], 2, 30));
    assert_eq!(
        sink.upsert(std::slice::from_ref(&replayed)).await?,
        report(0, 1, 0)
    );
    let f = query.book(dune, TimeRange::ALL).await?.figures;
    assert_eq!(
        (f.views, f.anonymous_views, f.unique_viewers, f.last_view_at),
        (6, 1, 3, Some(at(40))),
        "the window and its first correction replaced, the second kept"
    );
    // The older pieces arriving again are covered.
    assert_eq!(
        sink.upsert(&[window.clone(), c1.clone()]).await?,
        report(0, 0, 2)
    );
    // Another partition of the same window adds.
    let other = aggregate(0, d, Topic::BookViews, 1, (0, 3), views(1, 0, &[9], 50, 50));
    assert_eq!(
        sink.upsert(std::slice::from_ref(&other)).await?,
        report(1, 0, 0)
    );
    // Within one batch: a correction, then a longer view of it.
    let c3 = p0((12, 14), views(1, 0, &[4], 41, 41));
    let c3_more = p0((12, 15), views(2, 0, &[4, 5], 41, 42));
    assert_eq!(sink.upsert(&[c3, c3_more]).await?, report(1, 1, 0));
    let f = query.book(dune, TimeRange::ALL).await?.figures;
    assert_eq!(
        (f.views, f.unique_viewers, f.last_view_at),
        (6 + 1 + 2, 6, Some(at(50))),
        "views 5 + 1 + 2 on partition 0 and 1 on partition 1; users 1, 2, 3, 4, 5, 9"
    );
    // One aggregate covering the whole stretch replaces the three stored rows inside it.
    let whole = p0((0, 20), views(9, 1, &[1, 2, 3, 4, 5, 6], 2, 45));
    assert_eq!(
        sink.upsert(std::slice::from_ref(&whole)).await?,
        report(0, 1, 0)
    );
    let f = query.book(dune, TimeRange::ALL).await?.figures;
    assert_eq!(
        (
            f.views,
            f.anonymous_views,
            f.unique_viewers,
            f.first_view_at,
            f.last_view_at
        ),
        (9 + 1, 1, 7, Some(at(2)), Some(at(50)))
    );
    let history = query.book_history(dune, TimeRange::ALL).await?;
    assert_eq!(
        history
            .iter()
            .map(|w| (w.window_start, w.figures.views, w.figures.unique_viewers))
            .collect::<Vec<_>>(),
        vec![(at(0), 10, 7)]
    );
    let o = query.overview(TimeRange::ALL).await?;
    assert_eq!(
        (o.totals.views, o.unique_users, o.books_with_activity),
        (10, 7, 1)
    );
    let top = query.popular(PopularSort::Views, 1, TimeRange::ALL).await?;
    assert_eq!(
        top.iter().map(|p| (p.book_id, p.views)).collect::<Vec<_>>(),
        vec![(dune, 10)]
    );
    let w = query.overview_history(TimeRange::ALL).await?;
    assert_eq!(
        w.iter()
            .map(|w| (w.window_start, w.totals.views, w.unique_users))
            .collect::<Vec<_>>(),
        vec![(at(0), 10, 7)]
    );
    Ok(())
}

/// A batch larger than a store reads its stored rows in (the SQL sink reads them 400
/// aggregates at a time): a stored row that two parts of the batch both see is still
/// replaced once. Found by the chaos suite after a PostgreSQL outage, when the ingest's
/// backlog came in large batches and one of them failed for good.
pub async fn stats_large_batches(
    books: &dyn BookRepository,
    sink: &dyn StatsSink,
    query: &dyn StatsQuery,
) -> Result<()> {
    let dune = new_book(books, "Dune", "SF", 1299).await?.id;
    let d = dune.get();
    let stored = aggregate(0, d, Topic::BookViews, 0, (0, 5), views(1, 1, &[], 1, 1));
    assert_eq!(sink.upsert(&[stored]).await?, report(1, 0, 0));
    // 1,000 aggregates of the same window and book, from other partitions, then the one
    // that replaces the stored row, last.
    let mut batch: Vec<Aggregate> = (1..=1_000)
        .map(|p| aggregate(0, d, Topic::BookViews, p, (0, 1), views(1, 1, &[], 2, 2)))
        .collect();
    batch.push(aggregate(
        0,
        d,
        Topic::BookViews,
        0,
        (0, 10),
        views(3, 3, &[], 1, 3),
    ));
    assert_eq!(sink.upsert(&batch).await?, report(1_000, 1, 0));
    let f = query.book(dune, TimeRange::ALL).await?.figures;
    assert_eq!((f.views, f.anonymous_views), (1_003, 1_003));
    // The same batch again is a replay.
    assert_eq!(sink.upsert(&batch).await?, report(0, 0, 1_001));
    Ok(())
}

fn report(inserted: u64, replaced: u64, ignored: u64) -> UpsertReport {
    UpsertReport {
        inserted,
        replaced,
        ignored,
    }
}

/// Hand-computed figures: unique viewers across partitions, exact revenue, the average
/// rating after an update, popular lists with a tie, per-window history, ranges, and the
/// overview's top book and genre.
pub async fn stats_query(
    books: &dyn BookRepository,
    sink: &dyn StatsSink,
    query: &dyn StatsQuery,
) -> Result<()> {
    assert_eq!(query.newest_window().await?, None);
    assert_eq!(query.genres(TimeRange::ALL).await?, vec![]);
    let dune = new_book(books, "Dune", "SF", 1299).await?.id;
    let emma = new_book(books, "Emma", "Classics", 999).await?.id;
    let neuro = new_book(books, "Neuromancer", "SF", 899).await?.id;
    let (w1, w2) = (0, WINDOW);
    let d = dune.get();
    let purchases = |events, users: &[i64], cents, first, last| Figures {
        events,
        users: users_sketch(users),
        revenue_cents: cents,
        currency: Some(usd()),
        first_at: Some(at(first)),
        last_at: Some(at(last)),
        ..Figures::default()
    };
    let aggregates = vec![
        // Window 1. Dune's views arrive on two partitions and share user 2.
        aggregate(
            w1,
            d,
            Topic::BookViews,
            0,
            (0, 3),
            views(3, 1, &[1, 2], 5, 20),
        ),
        aggregate(
            w1,
            d,
            Topic::BookViews,
            1,
            (0, 2),
            views(2, 0, &[2, 3], 2, 50),
        ),
        aggregate(
            w1,
            d,
            Topic::BookPurchases,
            0,
            (0, 2),
            purchases(2, &[1, 2], 2 * 1299, 10, 30),
        ),
        aggregate(
            w1,
            d,
            Topic::BookRatings,
            0,
            (0, 2),
            Figures {
                events: 2,
                users: users_sketch(&[1, 2]),
                first_at: Some(at(12)),
                last_at: Some(at(14)),
                ratings_created: 2,
                rating_sum_delta: 4 + 5,
                rating_distribution_delta: [0, 0, 0, 1, 1],
                submitted_rating_sum: 9,
                ..Figures::default()
            },
        ),
        aggregate(
            w1,
            emma.get(),
            Topic::BookViews,
            2,
            (0, 3),
            views(3, 0, &[4], 1, 3),
        ),
        aggregate(
            w1,
            neuro.get(),
            Topic::BookViews,
            0,
            (3, 6),
            views(3, 0, &[5], 40, 41),
        ),
        // Window 2. User 1 changes their rating of Dune from 4 to 2.
        aggregate(
            w2,
            d,
            Topic::BookRatings,
            1,
            (0, 1),
            Figures {
                events: 1,
                users: users_sketch(&[1]),
                first_at: Some(at(70)),
                last_at: Some(at(70)),
                ratings_updated: 1,
                rating_sum_delta: 2 - 4,
                rating_distribution_delta: [0, 1, 0, -1, 0],
                submitted_rating_sum: 2,
                ..Figures::default()
            },
        ),
        aggregate(
            w2,
            d,
            Topic::BookReviews,
            0,
            (0, 1),
            Figures {
                events: 1,
                users: users_sketch(&[3]),
                first_at: Some(at(75)),
                last_at: Some(at(75)),
                reviews_created: 1,
                review_length_delta: 120,
                ..Figures::default()
            },
        ),
        aggregate(
            w2,
            d,
            Topic::BookDownloads,
            1,
            (0, 2),
            views(2, 0, &[1, 2], 80, 81),
        ),
        aggregate(
            w2,
            emma.get(),
            Topic::BookPurchases,
            1,
            (2, 3),
            purchases(1, &[4], 999, 90, 90),
        ),
        aggregate(
            w2,
            d,
            Topic::BookViews,
            0,
            (3, 4),
            views(1, 0, &[6], 100, 100),
        ),
    ];
    assert_eq!(
        sink.upsert(&aggregates).await?,
        report(aggregates.len() as u64, 0, 0)
    );
    // Deleted books keep their title in statistics, and leave their genre's count.
    books.delete(neuro, at(200)).await?;

    let all = query.book(dune, TimeRange::ALL).await?;
    assert_eq!(all.book_id, dune);
    assert_eq!(all.currency.as_deref(), Some("USD"));
    let want = BookFigures {
        views: 6,
        anonymous_views: 1,
        downloads: 2,
        purchases: 2,
        revenue_cents: 2598,
        reviews: 1,
        review_updates: 0,
        review_length_total: 120,
        ratings: 2,
        rating_events: 3,
        rating_sum: 7,
        rating_distribution: [0, 1, 0, 0, 1],
        unique_viewers: 4,
        unique_downloaders: 2,
        unique_purchasers: 2,
        first_view_at: Some(at(2)),
        last_view_at: Some(at(100)),
        last_purchase_at: Some(at(30)),
    };
    assert_eq!(all.figures, want);
    assert_eq!(all.figures.average_rating(), Some(3.5));
    assert_eq!(all.figures.average_review_length(), Some(120.0));

    let untouched = query.book(BookId(999_999), TimeRange::ALL).await?;
    assert_eq!(
        (untouched.figures, untouched.currency),
        (BookFigures::default(), None)
    );

    // Ranges select windows by start: `from` inclusive, `to` exclusive.
    let only_w2 = TimeRange::new(Some(at(w2)), None)?;
    let late = query.book(dune, only_w2).await?;
    assert_eq!(
        (
            late.figures.views,
            late.figures.unique_viewers,
            late.figures.purchases
        ),
        (1, 1, 0)
    );
    assert_eq!(
        (
            late.figures.ratings,
            late.figures.rating_events,
            late.figures.rating_sum
        ),
        (0, 1, -2)
    );
    assert_eq!(late.currency, None);
    let only_w1 = TimeRange::new(None, Some(at(w2)))?;
    let early = query.book(dune, only_w1).await?;
    assert_eq!((early.figures.views, early.figures.unique_viewers), (5, 3));
    assert_eq!(early.figures.average_rating(), Some(4.5));

    let history = query.book_history(dune, TimeRange::ALL).await?;
    assert_eq!(
        history
            .iter()
            .map(|w| (w.window_start, w.window_end))
            .collect::<Vec<_>>(),
        vec![(at(w1), at(w1 + WINDOW)), (at(w2), at(w2 + WINDOW))]
    );
    assert_eq!(history[0].figures, early.figures);
    assert_eq!(history[1].figures, late.figures);
    assert_eq!(query.book_history(dune, only_w2).await?.len(), 1);
    assert_eq!(
        query.book_history(BookId(999_999), TimeRange::ALL).await?,
        vec![]
    );
    let emma_history = query.book_history(emma, TimeRange::ALL).await?;
    assert_eq!(
        emma_history
            .iter()
            .map(|w| (w.figures.views, w.figures.purchases))
            .collect::<Vec<_>>(),
        vec![(3, 0), (0, 1)]
    );

    let overview = query.overview(TimeRange::ALL).await?;
    assert_eq!(overview.totals.views, 12);
    assert_eq!(overview.totals.unique_viewers, 6);
    assert_eq!(overview.totals.purchases, 3);
    assert_eq!(overview.totals.unique_purchasers, 3);
    assert_eq!(overview.totals.revenue_cents, 2598 + 999);
    assert_eq!(overview.totals.rating_sum, 7);
    assert_eq!(overview.unique_users, 6);
    assert_eq!(overview.books_with_activity, 3);
    assert_eq!(overview.currency.as_deref(), Some("USD"));
    assert_eq!(
        overview.most_popular_book,
        Some(TopBook {
            book_id: dune,
            title: "Dune".into(),
            views: 6
        })
    );
    assert_eq!(
        overview.top_genre,
        Some(TopGenre {
            genre: "SF".into(),
            book_count: 1,
            views: 9
        })
    );

    let late = query.overview(only_w2).await?;
    assert_eq!(
        (
            late.totals.views,
            late.totals.purchases,
            late.totals.revenue_cents
        ),
        (1, 1, 999)
    );
    assert_eq!((late.unique_users, late.books_with_activity), (5, 2));
    assert_eq!(
        late.most_popular_book.map(|b| (b.book_id, b.views)),
        Some((dune, 1))
    );
    let empty = query
        .overview(TimeRange::new(Some(at(10 * WINDOW)), None)?)
        .await?;
    assert_eq!(
        (empty.totals, empty.unique_users, empty.books_with_activity),
        (BookFigures::default(), 0, 0)
    );
    assert_eq!(
        (empty.most_popular_book, empty.top_genre, empty.currency),
        (None, None, None)
    );

    // Per genre: the deleted Neuromancer still counts for SF, but not in its book count.
    let genre = |genre: &str, book_count, books_with_activity, sums: [i64; 7]| GenreStats {
        genre: genre.into(),
        book_count,
        books_with_activity,
        views: sums[0] as u64,
        downloads: sums[1] as u64,
        purchases: sums[2] as u64,
        revenue_cents: sums[3],
        reviews: sums[4],
        ratings: sums[5],
        rating_sum: sums[6],
    };
    assert_eq!(
        query.genres(TimeRange::ALL).await?,
        vec![
            genre("SF", 1, 2, [9, 2, 2, 2598, 1, 2, 7]),
            genre("Classics", 1, 1, [3, 0, 1, 999, 0, 0, 0]),
        ]
    );
    assert_eq!(
        query.genres(only_w2).await?,
        vec![
            genre("SF", 1, 1, [1, 2, 0, 0, 1, 0, -2]),
            genre("Classics", 1, 1, [0, 0, 1, 999, 0, 0, 0]),
        ]
    );
    assert_eq!(
        query
            .genres(TimeRange::new(Some(at(10 * WINDOW)), None)?)
            .await?,
        vec![]
    );
    assert_eq!(
        query.newest_window().await?,
        Some(StoredWindow {
            window_start: at(w2),
            window_end: at(w2 + WINDOW),
        })
    );

    let windows = query.overview_history(TimeRange::ALL).await?;
    assert_eq!(
        windows
            .iter()
            .map(|w| (w.window_start, w.totals.views, w.unique_users))
            .collect::<Vec<_>>(),
        vec![(at(w1), 11, 5), (at(w2), 1, 5)]
    );
    assert_eq!(windows[1].totals.revenue_cents, 999);

    let by_views = query.popular(PopularSort::Views, 3, TimeRange::ALL).await?;
    assert_eq!(
        by_views
            .iter()
            .map(|p| (p.rank, p.book_id, p.title.as_str(), p.views))
            .collect::<Vec<_>>(),
        vec![
            (1, dune, "Dune", 6),
            (2, emma, "Emma", 3),
            (3, neuro, "Neuromancer", 3)
        ],
        "a tie in views goes to the lower id"
    );
    assert_eq!(by_views[0].revenue, Some(Money::new(2598, usd())));
    assert_eq!(by_views[1].revenue, Some(Money::new(999, usd())));
    assert_eq!(by_views[2].revenue, None);
    let by_revenue = query
        .popular(PopularSort::Revenue, 2, TimeRange::ALL)
        .await?;
    assert_eq!(
        by_revenue.iter().map(|p| p.book_id).collect::<Vec<_>>(),
        vec![dune, emma]
    );
    let by_purchases = query
        .popular(PopularSort::Purchases, 1, TimeRange::ALL)
        .await?;
    assert_eq!(
        by_purchases
            .iter()
            .map(|p| (p.rank, p.book_id, p.purchases))
            .collect::<Vec<_>>(),
        vec![(1, dune, 2)]
    );
    let by_downloads = query.popular(PopularSort::Downloads, 10, only_w2).await?;
    assert_eq!(
        by_downloads
            .iter()
            .map(|p| (p.book_id, p.downloads))
            .collect::<Vec<_>>(),
        vec![(dune, 2), (emma, 0)]
    );
    assert_eq!(
        query.popular(PopularSort::Views, 0, TimeRange::ALL).await?,
        vec![]
    );
    Ok(())
}

/// Generated aggregates over many books, windows and partitions (with enough users for
/// sketches to leave their exact form) give the same figures as the oracle's
/// [`Tally`], for every book, window and range tried.
pub async fn stats_match_fold(
    books: &dyn BookRepository,
    sink: &dyn StatsSink,
    query: &dyn StatsQuery,
) -> Result<()> {
    let mut ids = Vec::new();
    for (i, genre) in ["SF", "Classics", "Poetry", "SF", "Drama"]
        .into_iter()
        .enumerate()
    {
        ids.push(new_book(books, &format!("Book {i}"), genre, 500).await?.id);
    }
    let aggregates = generated_aggregates(&ids);
    for batch in aggregates.chunks(7) {
        sink.upsert(batch).await?;
    }

    let ranges = [
        TimeRange::ALL,
        TimeRange::new(Some(at(WINDOW)), None)?,
        TimeRange::new(Some(at(WINDOW)), Some(at(3 * WINDOW)))?,
    ];
    for range in ranges {
        let chosen: Vec<&Aggregate> = aggregates
            .iter()
            .filter(|a| range.contains(a.window_start))
            .collect();
        for &book in &ids {
            let mut fold = Tally::default();
            chosen
                .iter()
                .filter(|a| a.book_id == book)
                .for_each(|a| fold.add(a));
            let currency = fold.currency.clone();
            let (figures, _) = fold.finish();
            let got = query.book(book, range).await?;
            assert_eq!(got.figures, figures, "book {book} over {range:?}");
            assert_eq!(got.currency, currency);

            let want: Vec<_> =
                tally_by_window(chosen.iter().copied().filter(|a| a.book_id == book))
                    .into_iter()
                    .map(|(start, (end, f))| (start, end, f.finish().0))
                    .collect();
            let got: Vec<_> = query
                .book_history(book, range)
                .await?
                .into_iter()
                .map(|w| (w.window_start, w.window_end, w.figures))
                .collect();
            assert_eq!(got, want, "history of book {book} over {range:?}");
        }
        let mut all = Tally::default();
        chosen.iter().for_each(|a| all.add(a));
        let (totals, unique_users) = all.finish();
        let overview = query.overview(range).await?;
        assert_eq!(
            (overview.totals, overview.unique_users),
            (totals, unique_users),
            "overview over {range:?}"
        );

        let want: Vec<_> = tally_by_window(chosen.iter().copied())
            .into_iter()
            .map(|(start, (end, f))| {
                let (t, u) = f.finish();
                (start, end, t, u)
            })
            .collect();
        let got: Vec<_> = query
            .overview_history(range)
            .await?
            .into_iter()
            .map(|w| (w.window_start, w.window_end, w.totals, w.unique_users))
            .collect();
        assert_eq!(got, want, "overview history over {range:?}");
    }
    Ok(())
}

/// Deterministic pseudo-random aggregates: 4 windows × the given books × five topics ×
/// their partitions, each with a few hundred users so merged sketches pass the exact limit.
fn generated_aggregates(books: &[BookId]) -> Vec<Aggregate> {
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut out = Vec::new();
    for window in 0..4 {
        for &book in books {
            for topic in Topic::EVENTS {
                for partition in 0..topic.partitions() {
                    if next(4) == 0 {
                        continue;
                    }
                    let events = 1 + next(300);
                    let users: Vec<i64> = (0..events).map(|_| 1 + next(2000) as i64).collect();
                    let start = window * WINDOW;
                    let first = start + next(30) as i64;
                    let last = first + next(29) as i64;
                    let mut f = Figures {
                        events,
                        users: users_sketch(&users),
                        first_at: Some(at(first)),
                        last_at: Some(at(last)),
                        ..Figures::default()
                    };
                    match topic {
                        Topic::BookViews => f.anonymous = next(events),
                        Topic::BookPurchases => {
                            f.revenue_cents = events as i64 * 500;
                            f.currency = Some(usd());
                        }
                        Topic::BookReviews => {
                            f.reviews_created = next(events + 1);
                            f.reviews_updated = events - f.reviews_created;
                            f.review_length_delta = next(5000) as i64 - 1000;
                        }
                        Topic::BookRatings => {
                            f.ratings_created = next(events + 1);
                            f.ratings_updated = events - f.ratings_created;
                            f.rating_sum_delta = next(100) as i64 - 20;
                            f.rating_distribution_delta =
                                [0, 1, 2, 3, 4].map(|_| next(10) as i64 - 3);
                            f.submitted_rating_sum = next(1000) as i64;
                        }
                        _ => {}
                    }
                    let offset = next(1000) as i64;
                    out.push(aggregate(
                        start,
                        book.get(),
                        topic,
                        partition,
                        (offset, offset + events as i64),
                        f,
                    ));
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Rollups and retention
// ---------------------------------------------------------------------------------------

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A store's retention of per-window statistics, as the contract sees it.
///
/// The SQL store keeps per-window rows for a limited time and hourly, daily and all-time
/// rollups forever. [`StatsRetention::prune_windows_before`] drops the per-window rows of
/// windows starting before the whole hour at or before `before`, and returns that hour: the
/// horizon. Below it a range counts every hour it touches in full, and a history shows one
/// point per hour, `[hour, hour + 1 h)`; from it on nothing changes, and totals never
/// change. A store that keeps every window (the in-memory store) returns `None`.
pub trait StatsRetention: Send + Sync {
    fn prune_windows_before(
        &self,
        before: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Option<DateTime<Utc>>>>;
}

impl StatsRetention for folio_sql::SqlStore {
    fn prune_windows_before(
        &self,
        before: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Option<DateTime<Utc>>>> {
        Box::pin(async move { Ok(self.prune_stats_before(before).await?.horizon) })
    }
}

impl StatsRetention for folio_memory::MemoryStore {
    fn prune_windows_before(
        &self,
        _before: DateTime<Utc>,
    ) -> BoxFuture<'_, Result<Option<DateTime<Utc>>>> {
        Box::pin(async { Ok(None) })
    }
}

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn floor_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let ms = t.timestamp_millis();
    let floored = ms.div_euclid(HOUR * 1000) * HOUR * 1000;
    DateTime::from_timestamp_millis(floored).unwrap_or(t)
}

fn ceil_hour(t: DateTime<Utc>) -> DateTime<Utc> {
    let f = floor_hour(t);
    if f == t {
        t
    } else {
        f + chrono::Duration::seconds(HOUR)
    }
}

/// What the store answers, computed with the oracle's [`Tally`] from the aggregates it
/// holds, given the horizon its last prune reported.
struct Expected<'a> {
    held: &'a [Aggregate],
    horizon: Option<DateTime<Utc>>,
    /// Title and genre of every book in the catalog.
    catalog: &'a BTreeMap<BookId, (String, String)>,
}

impl Expected<'_> {
    /// The range the store reads: bounds below the horizon widen to whole hours.
    fn widened(&self, range: TimeRange) -> TimeRange {
        let Some(h) = self.horizon else {
            return range;
        };
        TimeRange {
            from: range.from.map(|f| if f < h { floor_hour(f) } else { f }),
            to: range.to.map(|t| if t < h { ceil_hour(t) } else { t }),
        }
    }

    fn chosen(&self, range: TimeRange) -> Vec<&Aggregate> {
        let range = self.widened(range);
        self.held
            .iter()
            .filter(|a| range.contains(a.window_start))
            .collect()
    }

    /// History points: per window from the horizon on, per hour below it.
    fn points<'b>(
        &self,
        aggs: impl IntoIterator<Item = &'b Aggregate>,
    ) -> Vec<(DateTime<Utc>, DateTime<Utc>, BookFigures, u64)> {
        let mut out: BTreeMap<DateTime<Utc>, (DateTime<Utc>, Tally)> = BTreeMap::new();
        for a in aggs {
            let (start, end) = match self.horizon {
                Some(h) if a.window_start < h => {
                    let hour = floor_hour(a.window_start);
                    (hour, hour + chrono::Duration::seconds(HOUR))
                }
                _ => (a.window_start, a.window_end),
            };
            let slot = out.entry(start).or_insert_with(|| (end, Tally::default()));
            slot.0 = slot.0.max(end);
            slot.1.add(a);
        }
        out.into_iter()
            .map(|(start, (end, fold))| {
                let (figures, users) = fold.finish();
                (start, end, figures, users)
            })
            .collect()
    }

    fn popular(&self, range: TimeRange, sort: PopularSort, limit: u32) -> Vec<PopularBook> {
        let mut folds: BTreeMap<BookId, Tally> = BTreeMap::new();
        for a in self.chosen(range) {
            folds.entry(a.book_id).or_default().add(a);
        }
        let rows = folds
            .into_iter()
            .map(|(id, fold)| {
                let currency = fold.currency.clone();
                let (f, _) = fold.finish();
                PopularBook {
                    rank: 0,
                    book_id: id,
                    title: self
                        .catalog
                        .get(&id)
                        .map(|(t, _)| t.clone())
                        .unwrap_or_default(),
                    views: f.views,
                    downloads: f.downloads,
                    purchases: f.purchases,
                    revenue: currency
                        .filter(|_| f.purchases > 0)
                        .and_then(|c| Currency::parse(&c).ok())
                        .map(|c| Money::new(f.revenue_cents, c)),
                }
            })
            .collect();
        rank_popular(rows, sort, limit)
    }
}

/// Checks every query over every range against [`Expected`].
async fn check_against_fold(
    query: &dyn StatsQuery,
    want: &Expected<'_>,
    ranges: &[TimeRange],
    stage: &str,
) -> Result<()> {
    for &range in ranges {
        let chosen = want.chosen(range);
        for (&book, _) in want.catalog.iter() {
            let mut fold = Tally::default();
            chosen
                .iter()
                .filter(|a| a.book_id == book)
                .for_each(|a| fold.add(a));
            let currency = fold.currency.clone();
            let (figures, _) = fold.finish();
            let got = query.book(book, range).await?;
            assert_eq!(got.figures, figures, "{stage}: book {book} over {range:?}");
            assert_eq!(got.currency, currency, "{stage}: currency of {book}");

            let points = want.points(chosen.iter().copied().filter(|a| a.book_id == book));
            let got: Vec<_> = query
                .book_history(book, range)
                .await?
                .into_iter()
                .map(|w| (w.window_start, w.window_end, w.figures))
                .collect();
            let points: Vec<_> = points.into_iter().map(|(s, e, f, _)| (s, e, f)).collect();
            assert_eq!(
                got, points,
                "{stage}: history of book {book} over {range:?}"
            );
        }

        let mut all = Tally::default();
        let mut views: BTreeMap<BookId, u64> = BTreeMap::new();
        for a in &chosen {
            all.add(a);
            let v = views.entry(a.book_id).or_default();
            if a.source.topic == Topic::BookViews {
                *v += a.figures.events;
            }
        }
        let currency = all.currency.clone();
        let (totals, unique_users) = all.finish();
        let overview = query.overview(range).await?;
        assert_eq!(
            (&overview.totals, overview.unique_users, &overview.currency),
            (&totals, unique_users, &currency),
            "{stage}: overview over {range:?}"
        );
        assert_eq!(
            overview.books_with_activity,
            views.len() as u64,
            "{stage}: books with activity over {range:?}"
        );
        let top_book = top(&views);
        assert_eq!(
            overview.most_popular_book.map(|b| (b.book_id, b.views)),
            top_book,
            "{stage}: most viewed book over {range:?}"
        );
        let mut genres: BTreeMap<&str, u64> = BTreeMap::new();
        for (id, v) in &views {
            if let Some((_, genre)) = want.catalog.get(id) {
                *genres.entry(genre.as_str()).or_default() += v;
            }
        }
        let top_genre = top(&genres).map(|(g, v)| (g.to_string(), v));
        assert_eq!(
            overview.top_genre.map(|g| (g.genre, g.views)),
            top_genre,
            "{stage}: top genre over {range:?}"
        );

        let want_windows: Vec<_> = want.points(chosen.iter().copied());
        let got: Vec<_> = query
            .overview_history(range)
            .await?
            .into_iter()
            .map(|w| (w.window_start, w.window_end, w.totals, w.unique_users))
            .collect();
        assert_eq!(
            got, want_windows,
            "{stage}: overview history over {range:?}"
        );

        for sort in [
            PopularSort::Views,
            PopularSort::Downloads,
            PopularSort::Purchases,
            PopularSort::Revenue,
        ] {
            for limit in [2, 10] {
                assert_eq!(
                    query.popular(sort, limit, range).await?,
                    want.popular(range, sort, limit),
                    "{stage}: popular by {sort:?} (top {limit}) over {range:?}"
                );
            }
        }
    }
    Ok(())
}

/// The aggregates a store holds after upserting `batches` in order, as the sink's contract
/// says (written here from the contract, not with the domain's rule): within a (window,
/// book, topic, partition), one whose offsets lie within a held one's is dropped; otherwise
/// it is held and every held one within its offsets is dropped.
fn held_after(batches: &[Vec<Aggregate>]) -> Vec<Aggregate> {
    type Group = (DateTime<Utc>, BookId, Topic, i32);
    let mut held: HashMap<Group, Vec<Aggregate>> = HashMap::new();
    let within = |inner: &Aggregate, outer: &Aggregate| {
        outer.source.first_offset <= inner.source.first_offset
            && inner.source.next_offset <= outer.source.next_offset
    };
    for a in batches.iter().flatten() {
        let group = held
            .entry((
                a.window_start,
                a.book_id,
                a.source.topic,
                a.source.partition,
            ))
            .or_default();
        if group.iter().any(|h| within(a, h)) {
            continue;
        }
        group.retain(|h| !within(h, a));
        group.push(a.clone());
    }
    held.into_values().flatten().collect()
}

/// A deterministic generator of pseudo-random numbers below `n`.
fn rng(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed;
    move |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n.max(1)
    }
}

/// Aggregates of the given window starts (seconds after [`at`]`(0)`) for `books`, with
/// users from a pool large enough that daily and all-time sketches leave the exact form.
fn aggregates_at(books: &[BookId], windows: &[i64], seed: u64) -> Vec<Aggregate> {
    let mut next = rng(seed);
    let mut out = Vec::new();
    for &start in windows {
        for &book in books {
            for topic in Topic::EVENTS {
                for partition in 0..topic.partitions() {
                    if next(2) == 0 {
                        continue;
                    }
                    let events = 1 + next(40);
                    let users: Vec<i64> = (0..events).map(|_| 1 + next(2500) as i64).collect();
                    let first = start + next(30) as i64;
                    let last = first + next(29) as i64;
                    let mut f = Figures {
                        events,
                        users: users_sketch(&users),
                        first_at: Some(at(first)),
                        last_at: Some(at(last)),
                        ..Figures::default()
                    };
                    match topic {
                        Topic::BookViews => f.anonymous = next(events),
                        Topic::BookPurchases => {
                            f.revenue_cents = events as i64 * (199 + next(1000) as i64);
                            f.currency = Some(usd());
                        }
                        Topic::BookReviews => {
                            f.reviews_created = next(events + 1);
                            f.reviews_updated = events - f.reviews_created;
                            f.review_length_delta = next(5000) as i64 - 1000;
                        }
                        Topic::BookRatings => {
                            f.ratings_created = next(events + 1);
                            f.ratings_updated = events - f.ratings_created;
                            f.rating_sum_delta = next(100) as i64 - 20;
                            f.rating_distribution_delta =
                                [0, 1, 2, 3, 4].map(|_| next(10) as i64 - 3);
                            f.submitted_rating_sum = next(1000) as i64;
                        }
                        _ => {}
                    }
                    let offset = next(1000) as i64;
                    out.push(aggregate(
                        start,
                        book.get(),
                        topic,
                        partition,
                        (offset, offset + events as i64),
                        f,
                    ));
                }
            }
        }
    }
    out
}

/// The same window of the same partition after `extra` more records: more events, more
/// users, an earlier first and a later last event — what a replay that read further
/// publishes.
fn more_complete(a: &Aggregate, extra: u64) -> Aggregate {
    let mut b = a.clone();
    let f = &mut b.figures;
    b.source.next_offset += extra as i64;
    f.events += extra;
    for u in 0..extra as i64 {
        f.users.insert_id(5000 + a.book_id.get() * 100 + u);
    }
    f.first_at = f.first_at.map(|t| t - chrono::Duration::seconds(1));
    f.last_at = f.last_at.map(|t| t + chrono::Duration::seconds(1));
    f.revenue_cents += f.currency.map_or(0, |_| 300 * extra as i64);
    f.reviews_created += u64::from(b.source.topic == Topic::BookReviews) * extra;
    f.review_length_delta += 17;
    f.ratings_updated += u64::from(b.source.topic == Topic::BookRatings) * extra;
    f.rating_sum_delta -= 2;
    f.rating_distribution_delta[4] += 1;
    f.rating_distribution_delta[0] -= 1;
    b
}

/// A replacement that is not a superset of what it replaces: other users, a later first
/// event and fewer events. No analytics service publishes this, but the sink's contract
/// allows it (it covers more offsets), so every total must follow it exactly.
fn rewritten(a: &Aggregate) -> Aggregate {
    let mut b = a.clone();
    let f = &mut b.figures;
    b.source.next_offset += 3;
    f.events = (f.events / 2).max(1);
    f.users = users_sketch(&[7_000 + a.book_id.get(), 7_777]);
    f.first_at = f.first_at.map(|t| t + chrono::Duration::seconds(2));
    f.anonymous /= 2;
    f.revenue_cents /= 3;
    f.rating_distribution_delta = [1, 0, 0, 0, 0];
    b
}

/// Rollups and retention keep every figure exact: aggregates over several hours and days,
/// some replaced by more complete ones (in the same batch, later, or arriving before the
/// original), some by replacements that are not supersets, replays; then a prune; then more
/// aggregates and replacements after the horizon. After each stage every query over
/// ranges with ragged edges inside hours, hours inside days and whole days equals the
/// oracle's [`Tally`] over the aggregates the store holds, with the retention rule of
/// [`StatsRetention`] where the store reports a horizon.
pub async fn stats_rollups_stay_exact(
    books: &dyn BookRepository,
    sink: &dyn StatsSink,
    query: &dyn StatsQuery,
    retention: &dyn StatsRetention,
) -> Result<()> {
    let mut catalog = BTreeMap::new();
    for (i, genre) in ["SF", "Classics", "SF", "Poetry", "Drama"]
        .into_iter()
        .enumerate()
    {
        let title = format!("Book {i}");
        let book = new_book(books, &title, genre, 500).await?;
        catalog.insert(book.id, (title, genre.to_string()));
    }
    let ids: Vec<BookId> = catalog.keys().copied().collect();
    // at(0) is noon, so days (UTC) begin at 12 h, 36 h and 60 h.
    let mut windows = Vec::new();
    for day in 0..3 {
        for hour in [0, 1, 2, 7, 11, 12, 13, 23] {
            for minute in [0, 1, 29, 59] {
                windows.push(day * DAY + hour * HOUR + minute * WINDOW);
            }
        }
    }
    let originals = aggregates_at(&ids, &windows, 0xfeed);

    let mut batches: Vec<Vec<Aggregate>> = Vec::new();
    let mut later = Vec::new();
    for (n, chunk) in originals.chunks(60).enumerate() {
        let mut batch = Vec::new();
        for (j, a) in chunk.iter().enumerate() {
            let i = n * 60 + j;
            let early = i % 2 == 0;
            if i % 11 == 5 {
                if early {
                    // Arrives before the original, which is then ignored as older.
                    batch.push(rewritten(a));
                } else {
                    later.push(rewritten(a));
                }
            }
            batch.push(a.clone());
            if i % 7 == 3 {
                if early {
                    batch.push(more_complete(a, 4));
                } else {
                    later.push(more_complete(a, 9));
                }
            }
        }
        batches.push(batch);
    }
    batches.extend(later.chunks(45).map(<[Aggregate]>::to_vec));
    // A replay of the first batch changes nothing.
    batches.push(batches[0].clone());
    for batch in &batches {
        sink.upsert(batch).await?;
    }
    let held = held_after(&batches);

    let r = |from: Option<i64>, to: Option<i64>| TimeRange::new(from.map(at), to.map(at));
    let mut ranges = vec![
        TimeRange::ALL,
        r(Some(WINDOW), None)?,
        r(None, Some(DAY + 2 * HOUR + 30 * WINDOW))?,
        r(
            Some(HOUR + 29 * WINDOW),
            Some(DAY + 12 * HOUR + 2 * HOUR + WINDOW),
        )?,
        r(Some(12 * HOUR), Some(12 * HOUR + DAY))?,
        r(Some(11 * HOUR + 30 * WINDOW), Some(13 * HOUR + WINDOW))?,
        r(Some(7 * HOUR), Some(7 * HOUR + 30 * WINDOW))?,
        r(
            Some(DAY + 29 * WINDOW),
            Some(2 * DAY + 23 * HOUR + 59 * WINDOW),
        )?,
    ];
    let want = Expected {
        held: &held,
        horizon: None,
        catalog: &catalog,
    };
    check_against_fold(query, &want, &ranges, "before pruning").await?;

    // Prune in the middle of the second day, at an odd minute.
    let before = at(DAY + 12 * HOUR + 7 * HOUR + 17 * WINDOW);
    let horizon = retention.prune_windows_before(before).await?;
    if let Some(h) = horizon {
        assert_eq!(
            h,
            floor_hour(before),
            "the horizon is the hour at or before"
        );
        assert_eq!(
            retention
                .prune_windows_before(before - chrono::Duration::seconds(DAY))
                .await?,
            Some(h),
            "the horizon never moves back"
        );
    }
    let h = DAY + 19 * HOUR;
    ranges.extend([
        // Both bounds below the horizon: widened to whole hours.
        r(
            Some(12 * HOUR + 3 * HOUR + 29 * WINDOW),
            Some(h - 2 * HOUR - 30 * WINDOW),
        )?,
        // Across the horizon, ragged below and above it.
        r(
            Some(12 * HOUR + 3 * HOUR + 29 * WINDOW),
            Some(h + 4 * HOUR + WINDOW),
        )?,
        r(None, Some(h + 29 * WINDOW))?,
        r(Some(h - 30 * WINDOW), Some(h + 30 * WINDOW))?,
        r(Some(h), None)?,
    ]);
    let want = Expected {
        held: &held,
        horizon,
        catalog: &catalog,
    };
    check_against_fold(query, &want, &ranges, "after pruning").await?;

    // New windows at and after the horizon, more complete figures of stored ones after it,
    // and a replay of those: totals move exactly, the replay changes nothing.
    let fresh = aggregates_at(&ids, &[h, h + WINDOW, h + HOUR + 29 * WINDOW], 0xbeef);
    let replaced: Vec<Aggregate> = held
        .iter()
        .filter(|a| a.window_start >= at(h))
        .step_by(5)
        .map(|a| more_complete(a, 2))
        .collect();
    ensure!(
        !replaced.is_empty(),
        "some stored aggregates lie after the horizon"
    );
    let mut after = vec![fresh, replaced.clone()];
    for batch in &after {
        sink.upsert(batch).await?;
    }
    assert_eq!(
        sink.upsert(&replaced).await?,
        report(0, 0, replaced.len() as u64),
        "a replay after pruning is still ignored"
    );
    after.insert(0, held);
    let held = held_after(&after);
    let want = Expected {
        held: &held,
        horizon,
        catalog: &catalog,
    };
    check_against_fold(query, &want, &ranges, "after more aggregates").await?;
    Ok(())
}
