//! What only the SQL store's statistics retention has to prove, on SQLite: the sink prunes
//! by itself, ignores aggregates below the horizon, and an upgraded database rolls up the
//! statistics it already held. The exactness of rollups and pruning against the domain's
//! fold runs for every store in `folio-tests` (`stats_rollups_stay_exact`).

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use folio_domain::analytics::{Aggregate, Figures, Sketch, SourceRange};
use folio_domain::ids::BookId;
use folio_domain::ports::{StatsQuery, StatsSink, UpsertReport};
use folio_domain::stats::{PopularSort, TimeRange};
use folio_domain::topics::Topic;
use folio_sql::migration::Migrator;
use folio_sql::{connect_with, SqlOptions};
use sea_orm_migration::MigratorTrait;
use tempfile::TempDir;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn file_url(dir: &TempDir) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("folio.db").display()
    )
}

fn keep_forever() -> SqlOptions {
    SqlOptions {
        stats_retention: None,
    }
}

fn views(start: DateTime<Utc>, book: i64, offsets: (i64, i64), users: &[i64]) -> Aggregate {
    let mut sketch = Sketch::new();
    users.iter().for_each(|&u| sketch.insert_id(u));
    Aggregate {
        window_start: start,
        window_end: start + TimeDelta::minutes(1),
        book_id: BookId(book),
        source: SourceRange {
            topic: Topic::BookViews,
            partition: 0,
            first_offset: offsets.0,
            next_offset: offsets.1,
        },
        figures: Figures {
            events: (offsets.1 - offsets.0) as u64,
            users: sketch,
            first_at: Some(start),
            last_at: Some(start + TimeDelta::seconds(30)),
            ..Figures::default()
        },
    }
}

fn report(inserted: u64, replaced: u64, ignored: u64) -> UpsertReport {
    UpsertReport {
        inserted,
        replaced,
        ignored,
    }
}

#[tokio::test]
async fn the_sink_prunes_past_the_retention_and_keeps_the_totals() -> TestResult {
    let dir = tempfile::tempdir()?;
    let options = SqlOptions {
        stats_retention: Some(Duration::from_secs(2 * 3600)),
    };
    let store = connect_with(&file_url(&dir), options).await?;
    let now = Utc::now().duration_trunc(TimeDelta::minutes(1))?;
    let old = now - TimeDelta::hours(5);
    let recent = now - TimeDelta::minutes(10);
    let stored = [
        views(old, 1, (0, 3), &[1, 2]),
        views(old + TimeDelta::minutes(1), 1, (3, 5), &[2, 3]),
        views(recent, 1, (5, 9), &[4]),
    ];
    // Its first upsert prunes: the windows of five hours ago are now hourly figures.
    assert_eq!(store.upsert(&stored).await?, report(3, 0, 0));

    let all = store.book(BookId(1), TimeRange::ALL).await?;
    assert_eq!(
        (all.figures.views, all.figures.unique_viewers),
        (9, 4),
        "totals survive pruning"
    );
    let hour = old.duration_trunc(TimeDelta::hours(1))?;
    let history: Vec<_> = store
        .book_history(BookId(1), TimeRange::ALL)
        .await?
        .into_iter()
        .map(|w| {
            (
                w.window_start,
                w.window_end,
                w.figures.views,
                w.figures.unique_viewers,
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![
            (hour, hour + TimeDelta::hours(1), 5, 3),
            (recent, recent + TimeDelta::minutes(1), 4, 1)
        ],
        "below the horizon a history shows hours"
    );

    // A replay or a "more complete" figure of a pruned window cannot be told from a new
    // one any more: it is ignored rather than counted twice.
    let replay = views(old, 1, (0, 4), &[1, 2, 9]);
    assert_eq!(store.upsert(&[replay]).await?, report(0, 0, 1));
    assert_eq!(store.book(BookId(1), TimeRange::ALL).await?, all);
    assert_eq!(
        store
            .popular(PopularSort::Views, 5, TimeRange::ALL)
            .await?
            .iter()
            .map(|p| (p.book_id, p.views))
            .collect::<Vec<_>>(),
        vec![(BookId(1), 9)]
    );
    Ok(())
}

#[tokio::test]
async fn pruning_is_explicit_when_retention_is_off_and_never_moves_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = connect_with(&file_url(&dir), keep_forever()).await?;
    let t0 = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")?.with_timezone(&Utc);
    let aggs: Vec<Aggregate> = (0..180)
        .map(|m| views(t0 + TimeDelta::minutes(m), 7, (m * 2, m * 2 + 2), &[m]))
        .collect();
    store.upsert(&aggs).await?;
    assert_eq!(
        store.prune_stats(Utc::now()).await?,
        folio_sql::PruneReport::default(),
        "retention off: nothing pruned by age"
    );
    let pruned = store
        .prune_stats_before(t0 + TimeDelta::minutes(90))
        .await?;
    assert_eq!(pruned.horizon, Some(t0 + TimeDelta::hours(1)));
    assert_eq!(
        pruned.deleted_rows,
        60 + 60,
        "an hour of window rows and of overview rows"
    );
    let again = store.prune_stats_before(t0).await?;
    assert_eq!(
        (again.horizon, again.deleted_rows),
        (Some(t0 + TimeDelta::hours(1)), 0)
    );
    let all = store.book(BookId(7), TimeRange::ALL).await?;
    assert_eq!((all.figures.views, all.figures.unique_viewers), (360, 180));
    let history = store.overview_history(TimeRange::ALL).await?;
    assert_eq!(
        history.len(),
        1 + 120,
        "one hourly point, then every window"
    );
    assert_eq!(history[0].totals.views, 120);
    assert_eq!(history[0].unique_users, 60);
    Ok(())
}

#[tokio::test]
async fn upgrading_a_database_rolls_up_the_statistics_it_holds() -> TestResult {
    let dir = tempfile::tempdir()?;
    let url = file_url(&dir);
    let store = connect_with(&url, keep_forever()).await?;
    let t0 = DateTime::parse_from_rfc3339("2026-03-01T22:30:00Z")?.with_timezone(&Utc);
    let mut aggs = Vec::new();
    for m in 0..240 {
        for book in 1..=3 {
            let users: Vec<i64> = (0..book * 3).map(|u| u * 1000 + m).collect();
            aggs.push(views(
                t0 + TimeDelta::minutes(m),
                book,
                (m * 10, m * 10 + book),
                &users,
            ));
        }
    }
    store.upsert(&aggs).await?;
    let ranges = [
        TimeRange::ALL,
        TimeRange::new(Some(t0 + TimeDelta::minutes(17)), None)?,
        TimeRange::new(None, Some(t0 + TimeDelta::minutes(151)))?,
    ];
    let mut before = Vec::new();
    for range in ranges {
        before.push((
            store.book(BookId(2), range).await?,
            store.overview(range).await?,
            store.popular(PopularSort::Views, 3, range).await?,
        ));
    }
    store.close().await?;

    // Back to the schema before rollups existed, with the aggregates still stored.
    let db = sea_orm::Database::connect(url.as_str()).await?;
    Migrator::down(&db, Some(1)).await?;
    db.close().await?;

    let store = connect_with(&url, keep_forever()).await?;
    for (range, want) in ranges.into_iter().zip(before) {
        let got = (
            store.book(BookId(2), range).await?,
            store.overview(range).await?,
            store.popular(PopularSort::Views, 3, range).await?,
        );
        assert_eq!(got, want, "over {range:?}");
    }
    Ok(())
}

#[test]
fn retention_is_read_as_a_number_with_a_unit_or_off() -> TestResult {
    use folio_sql::parse_retention;
    assert_eq!(
        parse_retention("7d")?,
        Some(Duration::from_secs(7 * 86_400))
    );
    assert_eq!(
        parse_retention("36h")?,
        Some(Duration::from_secs(36 * 3600))
    );
    assert_eq!(parse_retention("90m")?, Some(Duration::from_secs(90 * 60)));
    assert_eq!(
        parse_retention("2w")?,
        Some(Duration::from_secs(14 * 86_400))
    );
    assert_eq!(parse_retention("off")?, None);
    for bad in ["", "7", "d", "0d", "-1d", "7 days", "1y"] {
        assert!(parse_retention(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        SqlOptions::default().stats_retention,
        Some(folio_sql::DEFAULT_STATS_RETENTION)
    );
    Ok(())
}
