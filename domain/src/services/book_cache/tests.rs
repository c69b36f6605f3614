use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Mutex as StdMutex;
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::*;
use crate::catalog::{BookDraft, BookFilter, Page, PageRequest};
use crate::money::{Currency, Money};
use crate::Error;

/// The fakes below never wait, so one poll finishes every future.
fn run<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the fake repository never waits"),
    }
}

type Hook = Box<dyn Fn(&Catalog) + Send + Sync>;

/// A catalog shared by "instances": the books, the revision, and what each call did.
#[derive(Default)]
struct Catalog {
    books: StdMutex<HashMap<BookId, Book>>,
    revision: AtomicU64,
    gets: AtomicUsize,
    revision_reads: AtomicUsize,
    revision_fails: AtomicBool,
    /// Runs inside `get`, between reading the row and returning it: a write that lands
    /// while a fill is under way.
    during_get: StdMutex<Option<Hook>>,
}

impl Catalog {
    fn put(&self, id: i64, title: &str) {
        let at = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("test value");
        let book = Book {
            id: BookId(id),
            title: title.into(),
            author: "A".into(),
            genre: "g".into(),
            description: String::new(),
            price: Money::new(100, Currency::parse("USD").expect("test value")),
            file: None,
            created_at: at,
            updated_at: at,
        };
        self.books.lock().expect("test value").insert(book.id, book);
        self.revision.fetch_add(1, Ordering::SeqCst);
    }

    fn title(&self, cache: &BookCache, id: i64) -> Option<String> {
        run(cache.get(BookId(id), self))
            .expect("test value")
            .map(|b| b.title.clone())
    }

    fn gets(&self) -> usize {
        self.gets.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl BookRepository for Catalog {
    async fn create(&self, _: BookDraft, _: DateTime<Utc>) -> Result<Book> {
        unreachable!()
    }
    async fn get(&self, id: BookId) -> Result<Option<Book>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let book = self.books.lock().expect("test value").get(&id).cloned();
        if let Some(hook) = self.during_get.lock().expect("test value").take() {
            hook(self);
        }
        Ok(book)
    }
    async fn list(&self, _: PageRequest, _: &BookFilter) -> Result<Page<Book>> {
        unreachable!()
    }
    async fn update(&self, _: BookId, _: BookDraft, _: DateTime<Utc>) -> Result<Book> {
        unreachable!()
    }
    async fn delete(&self, _: BookId, _: DateTime<Utc>) -> Result<()> {
        unreachable!()
    }
    async fn revision(&self) -> Result<u64> {
        self.revision_reads.fetch_add(1, Ordering::SeqCst);
        if self.revision_fails.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("database", "down".into()));
        }
        Ok(self.revision.load(Ordering::SeqCst))
    }
}

const REFRESH: Duration = Duration::from_millis(40);

fn cache() -> BookCache {
    BookCache::new(REFRESH, DEFAULT_BUDGET_BYTES)
}

fn after_refresh() {
    std::thread::sleep(REFRESH + Duration::from_millis(10));
}

#[test]
fn a_second_view_within_refresh_reads_no_database() {
    let catalog = Catalog::default();
    catalog.put(1, "Dune");
    let cache = cache();
    for _ in 0..5 {
        assert_eq!(catalog.title(&cache, 1).as_deref(), Some("Dune"));
    }
    assert_eq!(catalog.gets(), 1);
    assert_eq!(catalog.revision_reads.load(Ordering::SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (4, 1, 1));
}

#[test]
fn a_change_elsewhere_shows_once_refresh_has_passed() {
    let catalog = Catalog::default();
    catalog.put(1, "Dune");
    catalog.put(2, "Emma");
    let cache = cache();
    assert_eq!(catalog.title(&cache, 1).as_deref(), Some("Dune"));
    assert_eq!(catalog.title(&cache, 2).as_deref(), Some("Emma"));
    // Another instance edits book 1: within `refresh` this one may still show the old
    // title; after it, never.
    catalog.put(1, "Dune Messiah");
    assert_eq!(catalog.title(&cache, 1).as_deref(), Some("Dune"));
    after_refresh();
    assert_eq!(catalog.title(&cache, 1).as_deref(), Some("Dune Messiah"));
    // The new revision emptied the cache: book 2 is read again too.
    let gets = catalog.gets();
    assert_eq!(catalog.title(&cache, 2).as_deref(), Some("Emma"));
    assert_eq!(catalog.gets(), gets + 1);
    assert_eq!(cache.stats().invalidations, 1);
}

#[test]
fn a_change_through_this_instance_shows_at_once() {
    let catalog = Catalog::default();
    catalog.put(1, "Dune");
    let cache = cache();
    assert_eq!(catalog.title(&cache, 1).as_deref(), Some("Dune"));
    catalog.put(1, "Dune Messiah");
    cache.changed(BookId(1));
    assert_eq!(catalog.title(&cache, 1).as_deref(), Some("Dune Messiah"));
}

#[test]
fn a_removed_book_is_gone_once_refresh_has_passed() {
    let catalog = Catalog::default();
    catalog.put(1, "Dune");
    let cache = cache();
    assert!(catalog.title(&cache, 1).is_some());
    catalog.books.lock().expect("test value").remove(&BookId(1));
    catalog.revision.fetch_add(1, Ordering::SeqCst);
    after_refresh();
    assert_eq!(catalog.title(&cache, 1), None);
    // A missing book is not remembered as missing: it is read each time.
    let gets = catalog.gets();
    assert_eq!(catalog.title(&cache, 1), None);
    assert_eq!(catalog.gets(), gets + 1);
}

#[test]
fn a_fill_begun_before_a_local_change_is_not_kept() {
    let catalog = Catalog::default();
    catalog.put(1, "Dune");
    let cache = cache();
    assert_eq!(catalog.title(&cache, 2), None);
    // The view reads the old row; the edit lands (and is announced) before the fill
    // returns. The old row must not be kept.
    let cache = std::sync::Arc::new(cache);
    let writer = cache.clone();
    *catalog.during_get.lock().expect("test value") = Some(Box::new(move |c: &Catalog| {
        c.put(1, "Dune Messiah");
        writer.changed(BookId(1));
    }));
    assert_eq!(catalog.title(&cache, 1).as_deref(), Some("Dune"));
    assert_eq!(catalog.title(&cache, 1).as_deref(), Some("Dune Messiah"));
}

#[test]
fn a_fill_begun_before_a_new_revision_is_not_kept() {
    let catalog = Catalog::default();
    catalog.put(1, "Dune");
    catalog.put(2, "Emma");
    let cache = cache();
    assert_eq!(catalog.title(&cache, 2).as_deref(), Some("Emma"));
    after_refresh();
    // The revision is confirmed (unchanged), then book 1's fill reads the old row while
    // another instance edits it. The old row is kept, but only until the next revision
    // read, which sees the edit and drops everything.
    *catalog.during_get.lock().expect("test value") =
        Some(Box::new(|c: &Catalog| c.put(1, "Dune Messiah")));
    assert_eq!(catalog.title(&cache, 1).as_deref(), Some("Dune"));
    assert_eq!(catalog.title(&cache, 1).as_deref(), Some("Dune"));
    after_refresh();
    assert_eq!(catalog.title(&cache, 1).as_deref(), Some("Dune Messiah"));
}

#[test]
fn without_a_revision_nothing_is_served_from_memory() {
    let catalog = Catalog::default();
    catalog.put(1, "Dune");
    let cache = cache();
    assert!(catalog.title(&cache, 1).is_some());
    catalog.revision_fails.store(true, Ordering::SeqCst);
    after_refresh();
    let gets = catalog.gets();
    for _ in 0..3 {
        assert_eq!(catalog.title(&cache, 1).as_deref(), Some("Dune"));
    }
    assert_eq!(catalog.gets(), gets + 3, "every view read the database");
    catalog.revision_fails.store(false, Ordering::SeqCst);
    assert!(catalog.title(&cache, 1).is_some());
    assert!(catalog.title(&cache, 1).is_some());
    // The revision reads again, unchanged: what was held is served again.
    assert_eq!(
        catalog.gets(),
        gets + 3,
        "served from memory once the revision reads"
    );
}

#[test]
fn the_budget_bounds_what_is_held() {
    let catalog = Catalog::default();
    for id in 1..=50 {
        catalog.put(id, &"t".repeat(1000));
    }
    // Room for about ten books of ~2.5 KB each (the text twice: the book and its page).
    let cache = BookCache::new(REFRESH, 26_000);
    for id in 1..=50 {
        assert!(catalog.title(&cache, id).is_some());
    }
    let stats = cache.stats();
    assert!(stats.bytes <= 26_000, "{stats:?}");
    assert!(stats.entries >= 9 && stats.entries <= 10, "{stats:?}");
}

#[test]
fn a_zero_refresh_reads_the_database_every_time() {
    let catalog = Catalog::default();
    catalog.put(1, "Dune");
    let cache = BookCache::new(Duration::ZERO, DEFAULT_BUDGET_BYTES);
    for _ in 0..3 {
        assert!(catalog.title(&cache, 1).is_some());
    }
    assert_eq!(catalog.gets(), 3);
    assert_eq!(catalog.revision_reads.load(Ordering::SeqCst), 0);
}
