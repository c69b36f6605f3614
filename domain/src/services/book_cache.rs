//! The book page's read-through cache.
//!
//! A book page is the most read thing in the store and the row behind it almost never
//! changes, so [`BookCache`] keeps books in memory and serves them without a database
//! round trip. It stays correct across several bookstore instances by *versioning*: the
//! catalog carries one revision number that every committed catalog write changes
//! ([`BookRepository::revision`]), and a cached book is served only while the cache has
//! read that revision within the last `refresh`.
//!
//! # The rule
//! A view that starts at `t` is served from memory only if a revision read that *began*
//! at or after `t − refresh` found the revision the cached books were read under. Hence:
//! - a catalog write committed on any instance at `w` is seen by every view that starts
//!   after `w + refresh`;
//! - a write through this instance is seen at once by this instance's next view (the
//!   writer drops the book and moves the cache to a new generation, [`BookCache::changed`]);
//! - while revisions cannot be read (the database is away) nothing is served from memory
//!   once `refresh` has passed, so the page fails as it would without the cache rather
//!   than serve a book of unknown age.
//!
//! One request at a time re-reads the revision, when the last read is `refresh` old;
//! the others meanwhile read the database as if uncached. A fill that started before a
//! change (a new revision, or a local write) is not kept: every fill is tagged with the
//! cache's generation when it began, and only a fill of the current generation is stored.
//!
//! The cache holds at most `budget_bytes` of books (estimated from their text); beyond,
//! it drops arbitrary entries, so a catalog larger than the budget still works, with
//! misses. Only the book page reads through it: purchases, downloads and uploads read
//! the database, so money and access never depend on a cached row.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::catalog::Book;
use crate::ids::BookId;
use crate::ports::BookRepository;
use crate::Result;

/// The default `refresh`: how stale a book page may be after a write on another instance.
pub const DEFAULT_REFRESH: Duration = Duration::from_millis(250);

/// The default memory budget of the cache.
pub const DEFAULT_BUDGET_BYTES: usize = 32 << 20;

/// Counters of a [`BookCache`], for `/metrics` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BookCacheStats {
    /// Views served from memory.
    pub hits: u64,
    /// Views read from the database.
    pub misses: u64,
    /// Revision reads that found the catalog changed (the cache was emptied).
    pub invalidations: u64,
    /// Books held, and their estimated bytes.
    pub entries: usize,
    pub bytes: usize,
}

/// A book as its page serves it: shared between the cache and the views it answers, with
/// one slot for the page's rendering (the HTTP adapter's JSON), made by the first view that
/// needs it. A cached book is renewed, never changed, so a rendering is as fresh as the
/// book it is kept beside.
#[derive(Debug)]
pub struct ServedBook {
    book: Book,
    rendered: OnceLock<Box<[u8]>>,
}

impl ServedBook {
    pub fn new(book: Book) -> Self {
        ServedBook {
            book,
            rendered: OnceLock::new(),
        }
    }

    /// The book rendered by `render`, once for as long as this book is served.
    pub fn rendered(&self, render: impl FnOnce(&Book) -> Vec<u8>) -> &[u8] {
        self.rendered
            .get_or_init(|| render(&self.book).into_boxed_slice())
    }
}

impl Deref for ServedBook {
    type Target = Book;

    fn deref(&self) -> &Book {
        &self.book
    }
}

#[derive(Default)]
struct State {
    /// Moves on every change seen; fills of an older generation are not stored.
    generation: u64,
    /// The catalog revision the held books were read under, and when that was confirmed
    /// (the instant the confirming read began).
    revision: Option<u64>,
    confirmed_at: Option<Instant>,
    books: HashMap<BookId, Arc<ServedBook>>,
    bytes: usize,
    stats: BookCacheStats,
}

enum Lookup {
    Hit(Arc<ServedBook>),
    /// Not held; a fill may be kept if the generation is still this one.
    Miss(u64),
    /// The revision was not confirmed within `refresh`.
    Stale,
}

/// See the module docs.
pub struct BookCache {
    refresh: Duration,
    budget_bytes: usize,
    state: Mutex<State>,
    /// A revision read is under way.
    confirming: AtomicBool,
}

impl BookCache {
    /// A cache whose books may be `refresh` stale after a write elsewhere, holding at most
    /// `budget_bytes`. A zero `refresh` or budget turns it off: every view reads the
    /// database.
    pub fn new(refresh: Duration, budget_bytes: usize) -> Self {
        BookCache {
            refresh,
            budget_bytes,
            state: Mutex::new(State::default()),
            confirming: AtomicBool::new(false),
        }
    }

    fn enabled(&self) -> bool {
        !self.refresh.is_zero() && self.budget_bytes > 0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fresh(&self, st: &State, now: Instant) -> bool {
        st.confirmed_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.refresh)
    }

    /// A live book, from memory when the rule allows, else from `books` (and kept).
    pub async fn get(
        &self,
        id: BookId,
        books: &dyn BookRepository,
    ) -> Result<Option<Arc<ServedBook>>> {
        if !self.enabled() {
            return Ok(books.get(id).await?.map(|b| Arc::new(ServedBook::new(b))));
        }
        let now = Instant::now();
        let mut looked = self.lookup(id, now);
        if matches!(looked, Lookup::Stale) && self.confirm(books, now).await {
            looked = self.lookup(id, now);
        }
        let generation = match looked {
            Lookup::Hit(book) => return Ok(Some(book)),
            Lookup::Miss(generation) => Some(generation),
            Lookup::Stale => None,
        };
        let book = books.get(id).await?.map(|b| Arc::new(ServedBook::new(b)));
        let mut st = self.lock();
        st.stats.misses += 1;
        if let (Some(book), Some(g)) = (&book, generation) {
            if st.generation == g && self.fresh(&st, Instant::now()) {
                self.store(&mut st, Arc::clone(book));
            }
        }
        Ok(book)
    }

    fn lookup(&self, id: BookId, now: Instant) -> Lookup {
        let mut st = self.lock();
        if !self.fresh(&st, now) {
            return Lookup::Stale;
        }
        match st.books.get(&id).cloned() {
            Some(book) => {
                st.stats.hits += 1;
                Lookup::Hit(book)
            }
            None => Lookup::Miss(st.generation),
        }
    }

    /// Reads the catalog's revision, unless another request is doing so; `false` when
    /// this view did not confirm the cache (it then reads the database uncached). A new
    /// revision empties the cache. A failed read confirms nothing: the view goes to the
    /// database, which answers for itself.
    async fn confirm(&self, books: &dyn BookRepository, began: Instant) -> bool {
        if self.confirming.swap(true, Ordering::Acquire) {
            return false;
        }
        let read = books.revision().await;
        let mut st = self.lock();
        self.confirming.store(false, Ordering::Release);
        let revision = match read {
            Ok(revision) => revision,
            Err(e) => {
                debug!(error = %e, "could not read the catalog revision; the view reads the database");
                return false;
            }
        };
        if st.revision != Some(revision) {
            if st.revision.is_some() {
                st.stats.invalidations += 1;
            }
            Self::clear(&mut st);
            st.revision = Some(revision);
        }
        if st.confirmed_at.is_none_or(|at| at < began) {
            st.confirmed_at = Some(began);
        }
        true
    }

    /// This instance changed the catalog (a book created, edited, removed or given a
    /// file): the next view of `id` reads the database, and fills begun before are not
    /// kept. Other books stay until the revision read that follows.
    pub fn changed(&self, id: BookId) {
        let mut st = self.lock();
        st.generation += 1;
        if let Some(old) = st.books.remove(&id) {
            st.bytes -= estimate(&old);
        }
    }

    pub fn stats(&self) -> BookCacheStats {
        let st = self.lock();
        BookCacheStats {
            entries: st.books.len(),
            bytes: st.bytes,
            ..st.stats
        }
    }

    fn clear(st: &mut State) {
        st.generation += 1;
        st.books.clear();
        st.bytes = 0;
    }

    fn store(&self, st: &mut State, book: Arc<ServedBook>) {
        let size = estimate(&book);
        if size > self.budget_bytes {
            return;
        }
        while st.bytes + size > self.budget_bytes {
            let Some(victim) = st.books.keys().next().copied() else {
                break;
            };
            if let Some(old) = st.books.remove(&victim) {
                st.bytes -= estimate(&old);
            }
        }
        if let Some(old) = st.books.insert(book.id, book) {
            st.bytes -= estimate(&old);
        }
        st.bytes += size;
    }
}

/// What a cached book holds in memory, roughly: its text twice (the book and its
/// rendering) and a fixed overhead.
fn estimate(book: &Book) -> usize {
    let file = book
        .file
        .as_ref()
        .map_or(0, |f| f.file_name.len() + f.content_type.len());
    512 + 2
        * (book.title.len() + book.author.len() + book.genre.len() + book.description.len() + file)
}

#[cfg(test)]
mod tests;
