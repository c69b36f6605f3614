//! `StatsQuery`: the admin read model. A range is cut into stretches of the statistics
//! tables ([`plan_totals`], [`plan_history`]); each query reads their `UNION ALL` in one
//! statement, so sums, groupings and orderings run in SQL over as few rows as the range
//! needs, and only users sketches come back to be merged. All statements of one call read
//! one snapshot, so a concurrent upsert or prune is seen entirely or not at all.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use folio_domain::analytics::Sketch;
use folio_domain::ids::BookId;
use folio_domain::money::{Currency, Money};
use folio_domain::ports::StatsQuery;
use folio_domain::stats::{
    rank_genres, BookStats, BookWindow, GenreStats, Overview, OverviewWindow, PopularBook,
    PopularSort, StoredWindow, TimeRange, TopBook, TopGenre,
};
use folio_domain::topics::Topic;
use folio_domain::Result;
use futures_util::StreamExt;
use sea_orm::sea_query::{
    Alias, Asterisk, Expr, ExprTrait, Func, JoinType, Order, Query, SelectStatement, SimpleExpr,
    UnionType,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QueryResult, QuerySelect, StreamTrait,
};

use super::cell::SUMMED_FIGURES;
use super::retention::horizon;
use super::tables::{plan_history, plan_totals, widen, Piece, Scope, Span};
use super::{
    bigint, col, figure_exprs, get_i64, get_u64, popular_exprs, rank_order, read_figures, sum_expr,
    Uniques, CURRENCY, SRC,
};
use crate::entity::window_stats::Column as Ws;
use crate::entity::{books, window_stats};
use crate::error::{corrupt, db_err};
use crate::store::SqlStore;
use crate::time::{from_ms, to_ms};
use folio_domain::stats::figures::{rule_of, Total};
use folio_domain::stats::rank;

/// What each stretch contributes to a union.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Its bucket, book, topic, end and figure columns, to be summed.
    Figures,
    /// Its bucket, topic and users sketch, for rows that have one.
    Sketches,
    /// The distinct books it has rows for.
    Books,
}

/// Restricts every stretch to one book and / or one topic.
#[derive(Debug, Clone, Copy, Default)]
struct Only {
    book: Option<BookId>,
    topic: Option<Topic>,
}

fn piece_select(p: &Piece, only: Only, shape: Shape) -> SelectStatement {
    let t = p.table;
    let key: SimpleExpr = Expr::col((t, Alias::new(t.key()))).into();
    let mut s = Query::select();
    s.from(t);
    if let Some(lo) = p.lo {
        s.and_where(key.clone().gte(lo));
    }
    if let Some(hi) = p.hi {
        s.and_where(key.clone().lt(hi));
    }
    if let Some(book) = only.book {
        s.and_where(Expr::col((t, Ws::BookId)).eq(t.book_of(book.get())));
    }
    if let Some(topic) = only.topic {
        s.and_where(Expr::col((t, Ws::SourceTopic)).eq(topic.name()));
    }
    match shape {
        Shape::Figures => {
            // A history point below the horizon is a whole hour.
            let end = match t.grain.length() {
                Some(len) => key.clone().add(len),
                None => Expr::col((t, Ws::WindowEnd)).into(),
            };
            s.expr_as(key, Alias::new("bucket"))
                .expr_as(end, Alias::new("window_end"))
                .column((t, Ws::BookId))
                .column((t, Ws::SourceTopic));
            for c in SUMMED_FIGURES {
                s.column((t, *c));
            }
        }
        Shape::Sketches => {
            s.expr_as(key, Alias::new("bucket"))
                .column((t, Ws::SourceTopic))
                .column((t, Ws::UsersSketch))
                .and_where(Expr::col((t, Ws::UsersSketch)).is_not_null());
        }
        Shape::Books => {
            s.distinct().column((t, Ws::BookId));
        }
    }
    s
}

/// The union of the stretches' rows; `None` when there are none.
fn union(pieces: &[Piece], only: Only, shape: Shape) -> Option<SelectStatement> {
    let (first, rest) = pieces.split_first()?;
    let mut all = piece_select(first, only, shape);
    let kind = match shape {
        // A book with rows in two stretches is one book.
        Shape::Books => UnionType::Distinct,
        _ => UnionType::All,
    };
    for p in rest {
        all.union(kind, piece_select(p, only, shape));
    }
    Some(all)
}

/// A select over the union, aliased [`SRC`] so [`figure_exprs`] can name its columns.
fn over(union: SelectStatement) -> SelectStatement {
    let mut s = Query::select();
    s.from_subquery(union, Alias::new(SRC));
    s
}

fn figures_over(union: SelectStatement) -> SelectStatement {
    let mut s = over(union);
    for (e, alias) in figure_exprs() {
        s.expr_as(e, Alias::new(alias));
    }
    s
}

/// A range as window-start milliseconds.
fn span(range: TimeRange) -> Span {
    (range.from.map(to_ms), range.to.map(to_ms))
}

/// One call's view of the statistics: a read-only snapshot and the horizon it saw.
struct Snapshot {
    txn: DatabaseTransaction,
    horizon: Option<i64>,
}

impl Snapshot {
    async fn rows(&self, select: &SelectStatement) -> Result<Vec<QueryResult>> {
        self.txn
            .query_all(self.txn.get_database_backend().build(select))
            .await
            .map_err(db_err)
    }

    async fn row(&self, select: &SelectStatement) -> Result<QueryResult> {
        self.txn
            .query_one(self.txn.get_database_backend().build(select))
            .await
            .map_err(db_err)?
            .ok_or_else(|| corrupt("an aggregate query returned no row"))
    }

    /// The stretches holding the totals of `range` for `scope`.
    fn totals(&self, scope: Scope, range: TimeRange) -> Vec<Piece> {
        plan_totals(scope, widen(span(range), self.horizon))
    }

    /// The stretches holding the history points of `range` for `scope`.
    fn history(&self, scope: Scope, range: TimeRange) -> Vec<Piece> {
        plan_history(scope, widen(span(range), self.horizon), self.horizon)
    }

    /// Sums the figures over `pieces`; all zero when there are none.
    async fn figures(
        &self,
        pieces: &[Piece],
        only: Only,
    ) -> Result<(folio_domain::stats::BookFigures, Option<String>)> {
        match union(pieces, only, Shape::Figures) {
            Some(u) => read_figures(&self.row(&figures_over(u)).await?),
            None => Ok(Default::default()),
        }
    }

    /// The figures per bucket, oldest first, with each bucket's end.
    async fn figures_per_bucket(&self, pieces: &[Piece], only: Only) -> Result<Vec<QueryResult>> {
        let Some(u) = union(pieces, only, Shape::Figures) else {
            return Ok(Vec::new());
        };
        let mut s = figures_over(u);
        let bucket = Expr::col((Alias::new(SRC), Alias::new("bucket")));
        s.expr_as(bucket.clone(), Alias::new("window_start"))
            .expr_as(
                Func::max(Expr::col((Alias::new(SRC), Ws::WindowEnd))),
                Alias::new("window_end"),
            )
            .group_by_col((Alias::new(SRC), Alias::new("bucket")))
            .order_by((Alias::new(SRC), Alias::new("bucket")), Order::Asc);
        self.rows(&s).await
    }

    /// Merges the users sketches of `pieces`, per bucket when `per_bucket` (else all under
    /// key 0). Rows are streamed, so memory stays bounded by the merged sketches.
    async fn uniques(
        &self,
        pieces: &[Piece],
        only: Only,
        per_bucket: bool,
    ) -> Result<BTreeMap<i64, Uniques>> {
        let mut out: BTreeMap<i64, Uniques> = BTreeMap::new();
        let Some(u) = union(pieces, only, Shape::Sketches) else {
            return Ok(out);
        };
        let mut stream = self
            .txn
            .stream(self.txn.get_database_backend().build(&u))
            .await
            .map_err(db_err)?;
        while let Some(row) = stream.next().await {
            let row = row.map_err(db_err)?;
            let bucket: i64 = row.try_get("", "bucket").map_err(db_err)?;
            let topic: String = row.try_get("", "source_topic").map_err(db_err)?;
            let topic = Topic::from_name(&topic)
                .ok_or_else(|| corrupt(format!("source topic {topic:?}")))?;
            let bytes: Vec<u8> = row.try_get("", "users_sketch").map_err(db_err)?;
            let sketch = Sketch::from_bytes(&bytes).map_err(corrupt)?;
            out.entry(if per_bucket { bucket } else { 0 })
                .or_default()
                .add(topic, &sketch);
        }
        Ok(out)
    }

    /// Titles of books by id, deleted ones included: statistics outlive the catalog entry.
    async fn titles(&self, ids: Vec<i64>) -> Result<HashMap<i64, String>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(i64, String)> = books::Entity::find()
            .select_only()
            .columns([books::Column::Id, books::Column::Title])
            .filter(books::Column::Id.is_in(ids))
            .into_tuple()
            .all(&self.txn)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().collect())
    }

    async fn books_with_activity(&self, pieces: &[Piece]) -> Result<u64> {
        let Some(u) = union(pieces, Only::default(), Shape::Books) else {
            return Ok(0);
        };
        let mut s = over(u);
        s.expr_as(bigint(Func::count(Expr::col(Asterisk))), Alias::new("n"));
        get_u64(&self.row(&s).await?, "n")
    }

    async fn most_viewed_book(&self, pieces: &[Piece]) -> Result<Option<TopBook>> {
        let rule = rule_of(Total::Views);
        let only = Only {
            book: None,
            topic: Some(rule.topic),
        };
        let Some(u) = union(pieces, only, Shape::Figures) else {
            return Ok(None);
        };
        let views = sum_expr(rule);
        let mut s = over(u);
        s.expr_as(col(Ws::BookId), Alias::new("book_id"))
            .expr_as(views.clone(), Alias::new("views"))
            .group_by_col((Alias::new(SRC), Ws::BookId))
            .and_having(views.gte(rank::TOP_MINIMUM));
        rank_order(&mut s, "views", col(Ws::BookId));
        s.limit(1);
        let Some(row) = self.rows(&s).await?.into_iter().next() else {
            return Ok(None);
        };
        let book_id = get_i64(&row, "book_id")?;
        let title = self
            .titles(vec![book_id])
            .await?
            .remove(&book_id)
            .unwrap_or_default();
        Ok(Some(TopBook {
            book_id: BookId(book_id),
            title,
            views: get_u64(&row, "views")?,
        }))
    }

    async fn top_genre(&self, pieces: &[Piece]) -> Result<Option<TopGenre>> {
        let rule = rule_of(Total::Views);
        let only = Only {
            book: None,
            topic: Some(rule.topic),
        };
        let Some(u) = union(pieces, only, Shape::Figures) else {
            return Ok(None);
        };
        let views = sum_expr(rule);
        let mut s = over(u);
        s.expr_as(
            Expr::col((books::Entity, books::Column::Genre)),
            Alias::new("genre"),
        )
        .expr_as(views.clone(), Alias::new("views"))
        .join(
            JoinType::InnerJoin,
            books::Entity,
            Expr::col((books::Entity, books::Column::Id)).equals((Alias::new(SRC), Ws::BookId)),
        )
        .group_by_col((books::Entity, books::Column::Genre))
        .and_having(views.gte(rank::TOP_MINIMUM));
        // Genres are few; they are ranked here so "alphabetical" means the same byte order
        // on every database, whatever its collation.
        let mut rows = Vec::new();
        for row in self.rows(&s).await? {
            let genre: String = row.try_get("", "genre").map_err(db_err)?;
            rows.push((get_i64(&row, "views")?, genre));
        }
        let Some((views, genre)) = rank::top(rows, |(v, g)| (*v, g.as_str())) else {
            return Ok(None);
        };
        let views = u64::try_from(views).unwrap_or(0);
        let book_count = books::Entity::find()
            .filter(books::Column::Genre.eq(genre.as_str()))
            .filter(books::Column::DeletedAt.is_null())
            .count(&self.txn)
            .await
            .map_err(db_err)?;
        Ok(Some(TopGenre {
            genre,
            book_count,
            views,
        }))
    }

    /// Every genre with activity over `pieces`, with its live book count.
    async fn genres(&self, pieces: &[Piece]) -> Result<Vec<GenreStats>> {
        let Some(u) = union(pieces, Only::default(), Shape::Figures) else {
            return Ok(Vec::new());
        };
        let genre = Expr::col((books::Entity, books::Column::Genre));
        let mut s = figures_over(u);
        s.expr_as(genre.clone(), Alias::new("genre"))
            .expr_as(
                bigint(Func::count_distinct(col(Ws::BookId))),
                Alias::new("books"),
            )
            .join(
                JoinType::InnerJoin,
                books::Entity,
                Expr::col((books::Entity, books::Column::Id)).equals((Alias::new(SRC), Ws::BookId)),
            )
            .group_by_col((books::Entity, books::Column::Genre));
        let counts: HashMap<String, i64> = books::Entity::find()
            .select_only()
            .column(books::Column::Genre)
            .column_as(books::Column::Id.count(), "n")
            .filter(books::Column::DeletedAt.is_null())
            .group_by(books::Column::Genre)
            .into_tuple::<(String, i64)>()
            .all(&self.txn)
            .await
            .map_err(db_err)?
            .into_iter()
            .collect();
        let mut out = Vec::new();
        for row in self.rows(&s).await? {
            let genre: String = row.try_get("", "genre").map_err(db_err)?;
            let (figures, _) = read_figures(&row)?;
            let book_count = counts.get(&genre).copied().unwrap_or(0).max(0) as u64;
            let books = get_u64(&row, "books")?;
            out.push(GenreStats::from_figures(genre, book_count, books, &figures));
        }
        Ok(rank_genres(out))
    }

    async fn finish(self) -> Result<()> {
        self.txn.commit().await.map_err(db_err)
    }
}

impl SqlStore {
    /// Opens a read-only snapshot. PostgreSQL needs REPEATABLE READ for one snapshot per
    /// transaction; a SQLite read transaction in WAL mode is one already.
    async fn snapshot(&self) -> Result<Snapshot> {
        let txn = self.begin().await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await
                .map_err(db_err)?;
        }
        let horizon = horizon(&txn).await?;
        Ok(Snapshot { txn, horizon })
    }
}

#[async_trait]
impl StatsQuery for SqlStore {
    async fn book(&self, book: BookId, range: TimeRange) -> Result<BookStats> {
        let snap = self.snapshot().await?;
        let pieces = snap.totals(Scope::Book, range);
        let only = Only {
            book: Some(book),
            topic: None,
        };
        let (mut figures, currency) = snap.figures(&pieces, only).await?;
        if let Some(u) = snap.uniques(&pieces, only, false).await?.get(&0) {
            u.fill(&mut figures);
        }
        snap.finish().await?;
        Ok(BookStats {
            book_id: book,
            figures,
            currency,
        })
    }

    async fn book_history(&self, book: BookId, range: TimeRange) -> Result<Vec<BookWindow>> {
        let snap = self.snapshot().await?;
        let pieces = snap.history(Scope::Book, range);
        let only = Only {
            book: Some(book),
            topic: None,
        };
        let rows = snap.figures_per_bucket(&pieces, only).await?;
        let uniques = snap.uniques(&pieces, only, true).await?;
        snap.finish().await?;
        rows.iter()
            .map(|row| {
                let start = get_i64(row, "window_start")?;
                let (mut figures, _) = read_figures(row)?;
                if let Some(u) = uniques.get(&start) {
                    u.fill(&mut figures);
                }
                Ok(BookWindow {
                    window_start: from_ms(start)?,
                    window_end: from_ms(get_i64(row, "window_end")?)?,
                    figures,
                })
            })
            .collect()
    }

    async fn overview(&self, range: TimeRange) -> Result<Overview> {
        let snap = self.snapshot().await?;
        let everyone = snap.totals(Scope::Overview, range);
        let per_book = snap.totals(Scope::Book, range);
        let (mut totals, currency) = snap.figures(&everyone, Only::default()).await?;
        let unique_users = match snap
            .uniques(&everyone, Only::default(), false)
            .await?
            .get(&0)
        {
            Some(u) => u.fill(&mut totals),
            None => 0,
        };
        let overview = Overview {
            totals,
            unique_users,
            books_with_activity: snap.books_with_activity(&per_book).await?,
            most_popular_book: snap.most_viewed_book(&per_book).await?,
            top_genre: snap.top_genre(&per_book).await?,
            currency,
        };
        snap.finish().await?;
        Ok(overview)
    }

    async fn overview_history(&self, range: TimeRange) -> Result<Vec<OverviewWindow>> {
        let snap = self.snapshot().await?;
        let pieces = snap.history(Scope::Overview, range);
        let rows = snap.figures_per_bucket(&pieces, Only::default()).await?;
        let uniques = snap.uniques(&pieces, Only::default(), true).await?;
        snap.finish().await?;
        rows.iter()
            .map(|row| {
                let start = get_i64(row, "window_start")?;
                let (mut totals, _) = read_figures(row)?;
                let unique_users = uniques.get(&start).map_or(0, |u| u.fill(&mut totals));
                Ok(OverviewWindow {
                    window_start: from_ms(start)?,
                    window_end: from_ms(get_i64(row, "window_end")?)?,
                    totals,
                    unique_users,
                })
            })
            .collect()
    }

    async fn popular(
        &self,
        sort: PopularSort,
        limit: u32,
        range: TimeRange,
    ) -> Result<Vec<PopularBook>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let metric = sort.total().name();
        let snap = self.snapshot().await?;
        let pieces = snap.totals(Scope::Book, range);
        let Some(u) = union(&pieces, Only::default(), Shape::Figures) else {
            snap.finish().await?;
            return Ok(Vec::new());
        };
        let mut select = over(u);
        for (e, alias) in popular_exprs() {
            select.expr_as(e, Alias::new(alias));
        }
        select
            .expr_as(col(Ws::BookId), Alias::new("book_id"))
            .group_by_col((Alias::new(SRC), Ws::BookId));
        rank_order(&mut select, metric, col(Ws::BookId));
        select.limit(u64::from(limit));
        let rows = snap.rows(&select).await?;
        let ids = rows
            .iter()
            .map(|r| get_i64(r, "book_id"))
            .collect::<Result<Vec<_>>>()?;
        let mut titles = snap.titles(ids).await?;
        snap.finish().await?;
        let mut out = Vec::with_capacity(rows.len());
        for (rank, row) in (1u32..).zip(&rows) {
            let book_id = get_i64(row, "book_id")?;
            let purchases = get_u64(row, Total::Purchases.name())?;
            let currency: Option<String> = row.try_get("", CURRENCY).map_err(db_err)?;
            // Purchase rows always name their currency, so a book with purchases has one.
            let revenue = match currency {
                Some(code) if purchases > 0 => Some(Money::new(
                    get_i64(row, Total::RevenueCents.name())?,
                    Currency::parse(&code).map_err(|_| corrupt(format!("currency {code:?}")))?,
                )),
                _ => None,
            };
            out.push(PopularBook {
                rank,
                book_id: BookId(book_id),
                title: titles.remove(&book_id).unwrap_or_default(),
                views: get_u64(row, Total::Views.name())?,
                downloads: get_u64(row, Total::Downloads.name())?,
                purchases,
                revenue,
            });
        }
        Ok(out)
    }

    async fn genres(&self, range: TimeRange) -> Result<Vec<GenreStats>> {
        let snap = self.snapshot().await?;
        let per_book = snap.totals(Scope::Book, range);
        let genres = snap.genres(&per_book).await?;
        snap.finish().await?;
        Ok(genres)
    }

    async fn newest_window(&self) -> Result<Option<StoredWindow>> {
        // By window_start, which leads the primary key: one index probe, not a scan.
        let newest: Option<(i64, i64)> = window_stats::Entity::find()
            .select_only()
            .columns([Ws::WindowStart, Ws::WindowEnd])
            .order_by_desc(Ws::WindowStart)
            .order_by_desc(Ws::WindowEnd)
            .limit(1)
            .into_tuple()
            .one(&self.db)
            .await
            .map_err(db_err)?;
        newest
            .map(|(start, end)| {
                Ok(StoredWindow {
                    window_start: from_ms(start)?,
                    window_end: from_ms(end)?,
                })
            })
            .transpose()
    }
}
