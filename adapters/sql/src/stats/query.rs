//! `StatsQuery`: the admin read model, computed from `window_stats` where all aggregates
//! meet. Sums and orderings run in SQL; only sketches come back to be merged.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use folio_domain::analytics::Sketch;
use folio_domain::ids::BookId;
use folio_domain::money::{Currency, Money};
use folio_domain::ports::StatsQuery;
use folio_domain::stats::{
    BookStats, BookWindow, Overview, OverviewWindow, PopularBook, PopularSort, TimeRange, TopBook,
    TopGenre,
};
use folio_domain::topics::Topic;
use folio_domain::Result;
use futures_util::StreamExt;
use sea_orm::sea_query::{
    Alias, Condition, Expr, ExprTrait, Func, JoinType, Order, Query, SelectStatement,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryResult,
    QuerySelect, StreamTrait,
};

use super::{bigint, col, figure_exprs, get_i64, get_u64, in_range, read_figures, Uniques};
use crate::entity::books;
use crate::entity::window_stats::{Column as Ws, Entity as WindowStats};
use crate::error::{corrupt, db_err};
use crate::store::SqlStore;
use crate::time::from_ms;

/// A select of the figures over the rows matching `filter`.
fn figures_select(filter: Condition) -> SelectStatement {
    let mut s = Query::select();
    s.from(WindowStats).cond_where(filter);
    for (e, alias) in figure_exprs() {
        s.expr_as(e, Alias::new(alias));
    }
    s
}

/// The same, per window, oldest first.
fn per_window_select(filter: Condition) -> SelectStatement {
    let mut s = figures_select(filter);
    s.expr_as(col(Ws::WindowStart), Alias::new("window_start"))
        .expr_as(Func::max(col(Ws::WindowEnd)), Alias::new("window_end"))
        .group_by_col((WindowStats, Ws::WindowStart))
        .order_by((WindowStats, Ws::WindowStart), Order::Asc);
    s
}

fn book_filter(book: BookId, range: TimeRange) -> Condition {
    in_range(range).add(col(Ws::BookId).eq(book.get()))
}

impl SqlStore {
    async fn rows(&self, select: &SelectStatement) -> Result<Vec<QueryResult>> {
        self.db
            .query_all(self.backend().build(select))
            .await
            .map_err(db_err)
    }

    async fn row(&self, select: &SelectStatement) -> Result<QueryResult> {
        self.db
            .query_one(self.backend().build(select))
            .await
            .map_err(db_err)?
            .ok_or_else(|| corrupt("an aggregate query returned no row"))
    }

    /// Merges the users sketches of the rows matching `filter`, per window start when
    /// `per_window` (else all under key 0). Rows are streamed, so memory stays bounded by
    /// the merged sketches whatever the range.
    async fn uniques(&self, filter: Condition, per_window: bool) -> Result<BTreeMap<i64, Uniques>> {
        let select = Query::select()
            .columns([Ws::WindowStart, Ws::SourceTopic, Ws::UsersSketch])
            .from(WindowStats)
            .cond_where(filter)
            .and_where(col(Ws::UsersSketch).is_not_null())
            .to_owned();
        let mut out: BTreeMap<i64, Uniques> = BTreeMap::new();
        let mut stream = self
            .db
            .stream(self.backend().build(&select))
            .await
            .map_err(db_err)?;
        while let Some(row) = stream.next().await {
            let row = row.map_err(db_err)?;
            let window: i64 = row.try_get("", "window_start").map_err(db_err)?;
            let topic: String = row.try_get("", "source_topic").map_err(db_err)?;
            let topic = Topic::from_name(&topic)
                .ok_or_else(|| corrupt(format!("source topic {topic:?}")))?;
            let bytes: Vec<u8> = row.try_get("", "users_sketch").map_err(db_err)?;
            let sketch = Sketch::from_bytes(&bytes).map_err(corrupt)?;
            out.entry(if per_window { window } else { 0 })
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
            .all(&self.db)
            .await
            .map_err(db_err)?;
        Ok(rows.into_iter().collect())
    }

    async fn most_viewed_book(&self, range: TimeRange) -> Result<Option<TopBook>> {
        let views = bigint(Func::sum(col(Ws::Events)));
        let select = Query::select()
            .expr_as(col(Ws::BookId), Alias::new("book_id"))
            .expr_as(views.clone(), Alias::new("views"))
            .from(WindowStats)
            .cond_where(in_range(range).add(col(Ws::SourceTopic).eq(Topic::BookViews.name())))
            .group_by_col((WindowStats, Ws::BookId))
            .and_having(views.gt(0i64))
            .order_by(Alias::new("views"), Order::Desc)
            .order_by((WindowStats, Ws::BookId), Order::Asc)
            .limit(1)
            .to_owned();
        let Some(row) = self.rows(&select).await?.into_iter().next() else {
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

    async fn top_genre(&self, range: TimeRange) -> Result<Option<TopGenre>> {
        let views = bigint(Func::sum(col(Ws::Events)));
        let select = Query::select()
            .expr_as(
                Expr::col((books::Entity, books::Column::Genre)),
                Alias::new("genre"),
            )
            .expr_as(views.clone(), Alias::new("views"))
            .from(WindowStats)
            .join(
                JoinType::InnerJoin,
                books::Entity,
                Expr::col((books::Entity, books::Column::Id)).equals((WindowStats, Ws::BookId)),
            )
            .cond_where(in_range(range).add(col(Ws::SourceTopic).eq(Topic::BookViews.name())))
            .group_by_col((books::Entity, books::Column::Genre))
            .and_having(views.gt(0i64))
            .to_owned();
        // Genres are few; the tie-break is done here so "alphabetical" means the same
        // byte order on every database, whatever its collation.
        let mut best: Option<(u64, String)> = None;
        for row in self.rows(&select).await? {
            let genre: String = row.try_get("", "genre").map_err(db_err)?;
            let v = get_u64(&row, "views")?;
            let better = match &best {
                None => true,
                Some((bv, bg)) => v > *bv || (v == *bv && genre < *bg),
            };
            if better {
                best = Some((v, genre));
            }
        }
        let Some((views, genre)) = best else {
            return Ok(None);
        };
        let book_count = books::Entity::find()
            .filter(books::Column::Genre.eq(genre.as_str()))
            .filter(books::Column::DeletedAt.is_null())
            .count(&self.db)
            .await
            .map_err(db_err)?;
        Ok(Some(TopGenre {
            genre,
            book_count,
            views,
        }))
    }
}

#[async_trait]
impl StatsQuery for SqlStore {
    async fn book(&self, book: BookId, range: TimeRange) -> Result<BookStats> {
        let row = self.row(&figures_select(book_filter(book, range))).await?;
        let (mut figures, currency) = read_figures(&row)?;
        if let Some(u) = self.uniques(book_filter(book, range), false).await?.get(&0) {
            u.fill(&mut figures);
        }
        Ok(BookStats {
            book_id: book,
            figures,
            currency,
        })
    }

    async fn book_history(&self, book: BookId, range: TimeRange) -> Result<Vec<BookWindow>> {
        let rows = self
            .rows(&per_window_select(book_filter(book, range)))
            .await?;
        let uniques = self.uniques(book_filter(book, range), true).await?;
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
        let mut select = figures_select(in_range(range));
        select.expr_as(
            Func::count_distinct(col(Ws::BookId)),
            Alias::new("books_with_activity"),
        );
        let row = self.row(&select).await?;
        let (mut totals, currency) = read_figures(&row)?;
        let unique_users = match self.uniques(in_range(range), false).await?.get(&0) {
            Some(u) => u.fill(&mut totals),
            None => 0,
        };
        Ok(Overview {
            totals,
            unique_users,
            books_with_activity: get_u64(&row, "books_with_activity")?,
            most_popular_book: self.most_viewed_book(range).await?,
            top_genre: self.top_genre(range).await?,
            currency,
        })
    }

    async fn overview_history(&self, range: TimeRange) -> Result<Vec<OverviewWindow>> {
        let rows = self.rows(&per_window_select(in_range(range))).await?;
        let uniques = self.uniques(in_range(range), true).await?;
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
        let metric = match sort {
            PopularSort::Views => "views",
            PopularSort::Downloads => "downloads",
            PopularSort::Purchases => "purchases",
            PopularSort::Revenue => "revenue",
        };
        let mut select = figures_select(in_range(range));
        select
            .expr_as(col(Ws::BookId), Alias::new("book_id"))
            .group_by_col((WindowStats, Ws::BookId))
            .order_by(Alias::new(metric), Order::Desc)
            .order_by((WindowStats, Ws::BookId), Order::Asc)
            .limit(u64::from(limit));
        let rows = self.rows(&select).await?;
        let ids = rows
            .iter()
            .map(|r| get_i64(r, "book_id"))
            .collect::<Result<Vec<_>>>()?;
        let mut titles = self.titles(ids).await?;
        let mut out = Vec::with_capacity(rows.len());
        for (rank, row) in (1u32..).zip(&rows) {
            let book_id = get_i64(row, "book_id")?;
            let (f, currency) = read_figures(row)?;
            // Purchase rows always name their currency, so a book with purchases has one.
            let revenue = match currency {
                Some(code) if f.purchases > 0 => Some(Money::new(
                    f.revenue_cents,
                    Currency::parse(&code).map_err(|_| corrupt(format!("currency {code:?}")))?,
                )),
                _ => None,
            };
            out.push(PopularBook {
                rank,
                book_id: BookId(book_id),
                title: titles.remove(&book_id).unwrap_or_default(),
                views: f.views,
                downloads: f.downloads,
                purchases: f.purchases,
                revenue,
            });
        }
        Ok(out)
    }
}
