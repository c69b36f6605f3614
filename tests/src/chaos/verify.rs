//! Compares what folio stored with what was produced, through the `StatsQuery` port (the
//! read model the admin API serves): per book and window, per book over all time, per
//! window over all books, the overview and the popular lists; and matches every dead
//! letter to what was injected.
//!
//! Unique counts are compared exactly while the true count is at most 1024 (the sketch is
//! exact there) and within the sketch's stated 2% above it. Everything else is exact.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use folio_domain::analytics::sketch::EXACT_LIMIT;
use folio_domain::events::Event;
use folio_domain::ids::{BookId, EventId};
use folio_domain::ports::StatsQuery;
use folio_domain::stats::{BookFigures, PopularSort, TimeRange};

use super::dlq::DeadRecord;
use super::expect::{Cell, CellKey, Expected};
use super::producer::ProducerLog;
use super::workload::{at_ms, BookRole, Plan, PoisonSpec};

/// A book of the catalog, as the comparison needs it.
#[derive(Debug, Clone)]
pub struct CatalogBook {
    pub id: BookId,
    pub title: String,
    pub genre: String,
    pub role: BookRole,
}

/// What a comparison found.
#[derive(Debug, Default)]
pub struct Report {
    pub diffs: Vec<String>,
    /// The (book, window) cells behind per-window differences.
    pub diff_cells: Vec<CellKey>,
    pub windows: usize,
    pub book_windows: usize,
    pub figures: u64,
    pub late_counted: usize,
    pub late_dead: usize,
    pub late_vanished: usize,
    /// Each late event's outcome: "counted", "dead-lettered", "counted and dead-lettered",
    /// "vanished" or "pending". Only "counted" passes.
    pub late_outcomes: Vec<&'static str>,
    pub dlq: DlqSummary,
}

/// What `analytics.dlq` held.
#[derive(Debug, Default, Clone)]
pub struct DlqSummary {
    pub records: usize,
    pub poison_found: usize,
    pub poison_lost: usize,
    /// Poison records dead-lettered more than once (replays: the topic is at-least-once).
    pub poison_repeated: usize,
    /// Duplicate deliveries dead-lettered (always 0 now: late copies correct their
    /// window; kept for the report's layout).
    pub duplicates_late: usize,
    pub late_events: usize,
}

struct Checker {
    diffs: Vec<String>,
    diff_cells: Vec<CellKey>,
    figures: u64,
}

fn ts(ms: i64) -> String {
    at_ms(ms).to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn opt_ms(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

impl Checker {
    fn int(&mut self, ctx: &str, name: &str, expected: i64, stored: i64) -> bool {
        self.figures += 1;
        if expected != stored {
            self.diffs.push(format!(
                "{ctx}: {name} expected {expected}, stored {stored}"
            ));
            return false;
        }
        true
    }

    fn unique(&mut self, ctx: &str, name: &str, expected: usize, stored: u64) -> bool {
        self.figures += 1;
        let e = expected as i64;
        let s = stored as i64;
        let ok = if expected <= EXACT_LIMIT {
            e == s
        } else {
            // The sketch's stated bound: within 2%.
            (s - e).abs() * 100 <= 2 * e
        };
        if !ok {
            let how = if expected <= EXACT_LIMIT {
                "exactly"
            } else {
                "within 2%"
            };
            self.diffs.push(format!(
                "{ctx}: {name} expected {expected} ({how}), stored {stored}"
            ));
        }
        ok
    }

    fn time(&mut self, ctx: &str, name: &str, expected: Option<i64>, stored: Option<i64>) -> bool {
        self.figures += 1;
        if expected != stored {
            let show = |t: Option<i64>| t.map_or("none".to_string(), ts);
            self.diffs.push(format!(
                "{ctx}: {name} expected {}, stored {}",
                show(expected),
                show(stored)
            ));
            return false;
        }
        true
    }

    fn eq<T: PartialEq + std::fmt::Debug>(
        &mut self,
        ctx: &str,
        name: &str,
        expected: T,
        stored: T,
    ) -> bool {
        self.figures += 1;
        if expected != stored {
            self.diffs.push(format!(
                "{ctx}: {name} expected {expected:?}, stored {stored:?}"
            ));
            return false;
        }
        true
    }

    /// Every figure of one cell. Returns whether all matched.
    fn cell(&mut self, ctx: &str, e: &Cell, s: &BookFigures, times: bool) -> bool {
        let mut ok = true;
        ok &= self.int(ctx, "views", e.views, s.views as i64);
        ok &= self.int(
            ctx,
            "anonymous views",
            e.anonymous,
            s.anonymous_views as i64,
        );
        ok &= self.int(ctx, "downloads", e.downloads, s.downloads as i64);
        ok &= self.int(ctx, "purchases", e.purchases, s.purchases as i64);
        ok &= self.int(ctx, "revenue (cents)", e.revenue_cents, s.revenue_cents);
        ok &= self.int(ctx, "reviews", e.reviews_created, s.reviews);
        ok &= self.int(
            ctx,
            "review updates",
            e.review_updates,
            s.review_updates as i64,
        );
        ok &= self.int(
            ctx,
            "review length total",
            e.review_length_total,
            s.review_length_total,
        );
        ok &= self.int(ctx, "ratings", e.ratings_created, s.ratings);
        ok &= self.int(
            ctx,
            "rating events",
            e.rating_events,
            s.rating_events as i64,
        );
        ok &= self.int(ctx, "rating sum", e.rating_sum, s.rating_sum);
        for (i, (x, y)) in e.distribution.iter().zip(s.rating_distribution).enumerate() {
            ok &= self.int(ctx, &format!("{}-star ratings", i + 1), *x, y);
        }
        ok &= self.unique(ctx, "unique viewers", e.viewers.len(), s.unique_viewers);
        ok &= self.unique(
            ctx,
            "unique downloaders",
            e.downloaders.len(),
            s.unique_downloaders,
        );
        ok &= self.unique(
            ctx,
            "unique purchasers",
            e.purchasers.len(),
            s.unique_purchasers,
        );
        if times {
            ok &= self.time(ctx, "first view", e.first_view_ms, opt_ms(s.first_view_at));
            ok &= self.time(ctx, "last view", e.last_view_ms, opt_ms(s.last_view_at));
            ok &= self.time(
                ctx,
                "last purchase",
                e.last_purchase_ms,
                opt_ms(s.last_purchase_at),
            );
        }
        ok
    }
}

/// The dead letters matched against the plan. Adds differences to `c`; returns the summary
/// and the indexes of late events that were dead-lettered as late.
fn check_dead_letters(
    c: &mut Checker,
    records: &[DeadRecord],
    plan: &Plan,
    log: &ProducerLog,
) -> (DlqSummary, Vec<bool>) {
    let mut sum = DlqSummary {
        records: records.len(),
        ..Default::default()
    };
    let poison_by_id: HashMap<EventId, usize> = plan.poison.iter().map(|p| (p.id, p.n)).collect();
    let late_by_id: HashMap<EventId, usize> = log
        .late
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().map(|e| (e.event_id(), i)))
        .collect();
    let on_time: HashMap<EventId, &Event> = log
        .events
        .iter()
        .flatten()
        .map(|e| (e.event_id(), e))
        .collect();
    let mut poison_seen = vec![0u32; plan.poison.len()];
    let mut late_dead = vec![false; plan.late.len()];
    for r in records {
        let id: Option<EventId> = serde_json::from_slice::<serde_json::Value>(&r.value)
            .ok()
            .and_then(|v| v.get("event_id")?.as_str()?.parse::<uuid::Uuid>().ok())
            .map(EventId);
        let garbage = find_marker(&r.value);
        let ctx = format!(
            "dead letter from {}/{}@{}",
            r.origin_topic,
            r.origin_partition.unwrap_or(-1),
            r.origin_offset.unwrap_or(-1)
        );
        if let Some(n) = id.and_then(|i| poison_by_id.get(&i).copied()).or(garbage) {
            let p = &plan.poison[n];
            poison_seen[n] += 1;
            c.eq(
                &ctx,
                "origin topic of poison",
                p.topic.name(),
                r.origin_topic.as_str(),
            );
            c.figures += 1;
            if r.is_late() || r.reason.starts_with("too_late") || r.reason.is_empty() {
                c.diffs
                    .push(format!("{ctx}: poison #{n} has reason {:?}", r.reason));
            }
        } else if let Some(i) = id.and_then(|i| late_by_id.get(&i).copied()) {
            sum.late_events += 1;
            c.figures += 1;
            // Late events correct their window (docs/exactness.md); the workload's are far
            // inside the lateness horizon, so none may be dead-lettered.
            late_dead[i] = true;
            c.diffs.push(format!(
                "{ctx}: late event #{i} was dead-lettered ({:?}) instead of correcting its window",
                r.reason
            ));
        } else if let Some(e) = id.and_then(|i| on_time.get(&i)) {
            let copies = log.copies.get(&e.event_id()).copied().unwrap_or(0);
            c.figures += 1;
            // A second delivery after its window closed counts once, in the window or its
            // correction: no on-time event, duplicated or not, is ever dead-lettered.
            c.diffs.push(format!(
                "{ctx}: on-time event {} ({}, {} copies) was dead-lettered: {}",
                e.event_id(),
                ts(e.occurred_at().timestamp_millis()),
                copies,
                r.reason
            ));
        } else {
            c.diffs.push(format!(
                "{ctx}: a dead letter the run did not inject: {} ({} bytes)",
                r.reason,
                r.value.len()
            ));
        }
    }
    for (n, seen) in poison_seen.iter().enumerate() {
        if !log.poison_sent.get(n).copied().unwrap_or(false) {
            continue;
        }
        c.figures += 1;
        match seen {
            0 => {
                sum.poison_lost += 1;
                let p: &PoisonSpec = &plan.poison[n];
                c.diffs.push(format!(
                    "poison #{n} ({:?} on {}) never reached analytics.dlq",
                    p.kind, p.topic
                ));
            }
            1 => sum.poison_found += 1,
            _ => {
                sum.poison_found += 1;
                sum.poison_repeated += 1;
            }
        }
    }
    (sum, late_dead)
}

fn find_marker(v: &[u8]) -> Option<usize> {
    let m = b"chaos-poison#";
    let at = v.windows(m.len()).position(|w| w == m)? + m.len();
    let digits: String = v[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|b| *b as char)
        .collect();
    digits.parse().ok()
}

/// Compares everything stored with `expected` (the on-time events) and the late events'
/// outcomes. Without `dead` (while waiting for the figures to settle) late events that are
/// not counted are not judged and the dead letters are not read.
pub async fn compare(
    q: &dyn StatsQuery,
    expected: &Expected,
    catalog: &[CatalogBook],
    plan: &Plan,
    log: &ProducerLog,
    dead: Option<&[DeadRecord]>,
) -> anyhow::Result<Report> {
    let mut c = Checker {
        diffs: Vec::new(),
        diff_cells: Vec::new(),
        figures: 0,
    };
    let mut report = Report::default();
    let mut late_dead = vec![false; plan.late.len()];
    if let Some(records) = dead {
        let (sum, ld) = check_dead_letters(&mut c, records, plan, log);
        report.dlq = sum;
        late_dead = ld;
    }

    // Every book's history, once.
    let mut history: BTreeMap<i64, BTreeMap<i64, BookFigures>> = BTreeMap::new();
    for b in catalog {
        let rows = q.book_history(b.id, TimeRange::ALL).await?;
        history.insert(
            b.id.get(),
            rows.into_iter()
                .map(|w| (w.window_start.timestamp_millis(), w.figures))
                .collect(),
        );
    }

    // Late events: counted (their book's only window holds exactly them) or dead-lettered.
    let mut effective = expected.clone();
    for (i, late) in log.late.iter().enumerate() {
        let Some(e) = late else { continue };
        let book = e.book_id().get();
        let w = expected.window_of(e.occurred_at().timestamp_millis());
        let stored = history.get(&book).and_then(|h| h.get(&w));
        let ctx = format!("late event #{i} (book {book}, window {})", ts(w));
        report
            .late_outcomes
            .push(match (stored.is_some(), late_dead[i]) {
                (true, false) => "counted",
                (true, true) => "counted and dead-lettered",
                (false, true) => "dead-lettered",
                (false, false) if dead.is_some() => "vanished",
                (false, false) => "pending",
            });
        // Every late event is expected in its window, exactly: the per-window comparison
        // below judges the figures; here only whether it arrived at all.
        effective.add(e);
        match stored {
            Some(_) => report.late_counted += 1,
            None if dead.is_some() => {
                if late_dead[i] {
                    report.late_dead += 1;
                }
                report.late_vanished += 1;
                c.diffs
                    .push(format!("{ctx}: late event not counted in its window"));
            }
            None => {}
        }
    }

    // Per book and window.
    for b in catalog {
        let id = b.id.get();
        let stored = history.get(&id).cloned().unwrap_or_default();
        for (&(_, w), cell) in effective.cells.range((id, i64::MIN)..=(id, i64::MAX)) {
            let ctx = format!("book {id} window {}", ts(w));
            report.book_windows += 1;
            let ok = match stored.get(&w) {
                Some(s) => c.cell(&ctx, cell, s, true),
                None => c.cell(&ctx, cell, &BookFigures::default(), true),
            };
            if !ok {
                c.diff_cells.push((id, w));
            }
        }
        for (w, s) in &stored {
            if !effective.cells.contains_key(&(id, *w)) {
                let ctx = format!("book {id} window {} (no events expected)", ts(*w));
                if !c.cell(&ctx, &Cell::default(), s, true) {
                    c.diff_cells.push((id, *w));
                }
            }
        }
        // All time, where unique counts pass the sketch's exact range.
        let all = q.book(b.id, TimeRange::ALL).await?;
        let ctx = format!("book {id} all time");
        c.cell(&ctx, &effective.book_total(id), &all.figures, true);
    }

    // Per window, over all books.
    let windows = effective.windows();
    report.windows = windows.len();
    let stored_windows: BTreeMap<i64, _> = q
        .overview_history(TimeRange::ALL)
        .await?
        .into_iter()
        .map(|w| (w.window_start.timestamp_millis(), w))
        .collect();
    for w in &windows {
        let ctx = format!("overview window {}", ts(*w));
        let e = effective.window_total(*w);
        match stored_windows.get(w) {
            Some(s) => {
                c.cell(&ctx, &e, &s.totals, false);
                c.unique(&ctx, "unique users", e.users.len(), s.unique_users);
            }
            None => {
                c.diffs.push(format!("{ctx}: missing"));
            }
        }
    }
    for w in stored_windows.keys() {
        if !windows.contains(w) {
            c.diffs.push(format!(
                "overview window {}: stored, but no events expected",
                ts(*w)
            ));
        }
    }

    // The overview over all time.
    let total = effective.total();
    let ov = q.overview(TimeRange::ALL).await?;
    let ctx = "overview all time";
    c.cell(ctx, &total, &ov.totals, true);
    c.unique(ctx, "unique users", total.users.len(), ov.unique_users);
    c.int(
        ctx,
        "books with activity",
        effective.books().len() as i64,
        ov.books_with_activity as i64,
    );
    c.eq(
        ctx,
        "currency",
        Some("USD".to_string()),
        ov.currency.clone(),
    );
    let by_id: HashMap<i64, &CatalogBook> = catalog.iter().map(|b| (b.id.get(), b)).collect();
    let totals: BTreeMap<i64, Cell> = effective
        .books()
        .into_iter()
        .map(|b| (b, effective.book_total(b)))
        .collect();
    let top = totals
        .iter()
        .filter(|(_, t)| t.views > 0)
        .max_by(|(a, x), (b, y)| x.views.cmp(&y.views).then(b.cmp(a)))
        .map(|(b, t)| {
            (
                *b,
                by_id.get(b).map(|x| x.title.clone()).unwrap_or_default(),
                t.views as u64,
            )
        });
    c.eq(
        ctx,
        "most popular book (id, title, views)",
        top,
        ov.most_popular_book
            .as_ref()
            .map(|t| (t.book_id.get(), t.title.clone(), t.views)),
    );
    let mut genre_views: BTreeMap<String, i64> = BTreeMap::new();
    for (b, t) in &totals {
        if let Some(book) = by_id.get(b) {
            *genre_views.entry(book.genre.clone()).or_default() += t.views;
        }
    }
    let top_genre = genre_views
        .iter()
        .filter(|(_, v)| **v > 0)
        .max_by(|(g, v), (h, w)| v.cmp(w).then(h.as_bytes().cmp(g.as_bytes())))
        .map(|(g, v)| {
            let count = catalog.iter().filter(|b| &b.genre == g).count() as u64;
            (g.clone(), count, *v as u64)
        });
    c.eq(
        ctx,
        "top genre (genre, books, views)",
        top_genre,
        ov.top_genre
            .as_ref()
            .map(|g| (g.genre.clone(), g.book_count, g.views)),
    );

    // Popular lists.
    for sort in [
        PopularSort::Views,
        PopularSort::Downloads,
        PopularSort::Purchases,
        PopularSort::Revenue,
    ] {
        let metric = |t: &Cell| match sort {
            PopularSort::Views => t.views,
            PopularSort::Downloads => t.downloads,
            PopularSort::Purchases => t.purchases,
            PopularSort::Revenue => t.revenue_cents,
        };
        let mut rows: Vec<(i64, &Cell)> = totals.iter().map(|(b, t)| (*b, t)).collect();
        rows.sort_by(|(a, x), (b, y)| metric(y).cmp(&metric(x)).then(a.cmp(b)));
        let want: Vec<(i64, i64, i64, i64, Option<i64>)> = rows
            .iter()
            .take(10)
            .map(|(b, t)| {
                let revenue = (t.purchases > 0).then_some(t.revenue_cents);
                (*b, t.views, t.downloads, t.purchases, revenue)
            })
            .collect();
        let got: Vec<(i64, i64, i64, i64, Option<i64>)> = q
            .popular(sort, 10, TimeRange::ALL)
            .await?
            .iter()
            .map(|p| {
                (
                    p.book_id.get(),
                    p.views as i64,
                    p.downloads as i64,
                    p.purchases as i64,
                    p.revenue.map(|m| m.amount_cents),
                )
            })
            .collect();
        c.eq(
            &format!("popular by {sort:?}"),
            "top 10 (book, views, downloads, purchases, revenue)",
            want,
            got,
        );
    }

    report.diffs = c.diffs;
    report.diff_cells = c.diff_cells;
    report.figures = c.figures;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_counts_are_exact_below_the_limit_and_within_two_percent_above() {
        let mut c = Checker {
            diffs: Vec::new(),
            diff_cells: Vec::new(),
            figures: 0,
        };
        assert!(c.unique("x", "u", 1024, 1024));
        assert!(!c.unique("x", "u", 1000, 1001));
        assert!(c.unique("x", "u", 2000, 2040));
        assert!(!c.unique("x", "u", 2000, 2041));
        assert_eq!(c.diffs.len(), 2);
        assert_eq!(find_marker(b"\x00\xff{chaos-poison#17#\x80"), Some(17));
        assert_eq!(find_marker(b"{}"), None);
    }
}
