//! `ReviewRepository` and `RatingRepository`. Every change writes its event to the outbox
//! in the same transaction; an update reads the value it replaces inside that transaction,
//! so the event's old value is the one the row really had.

use async_trait::async_trait;
use folio_domain::catalog::{Page, PageRequest};
use folio_domain::events::{Event, EventMeta};
use folio_domain::feedback::{Rating, RatingUpdate, Review, ReviewText, ReviewUpdate, Stars};
use folio_domain::ids::{BookId, ReviewId, UserId};
use folio_domain::ports::{RatingRepository, ReviewRepository};
use folio_domain::{Error, Result};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};

use crate::entity::{ratings, reviews};
use crate::error::{corrupt, db_err, unique_as};
use crate::outbox::enqueue;
use crate::store::SqlStore;
use crate::time::{from_ms, to_ms};

fn to_review(m: reviews::Model) -> Result<Review> {
    Ok(Review {
        id: ReviewId(m.id),
        book_id: BookId(m.book_id),
        user_id: UserId(m.user_id),
        text: m.text,
        created_at: from_ms(m.created_at)?,
        updated_at: from_ms(m.updated_at)?,
    })
}

fn to_stars(m: &ratings::Model) -> Result<Stars> {
    Stars::parse(i64::from(m.stars))
        .map_err(|_| corrupt(format!("stars {} of rating {}", m.stars, m.id)))
}

fn to_rating(m: &ratings::Model) -> Result<Rating> {
    Ok(Rating {
        book_id: BookId(m.book_id),
        user_id: UserId(m.user_id),
        stars: to_stars(m)?,
        created_at: from_ms(m.created_at)?,
        updated_at: from_ms(m.updated_at)?,
    })
}

#[async_trait]
impl ReviewRepository for SqlStore {
    async fn create(
        &self,
        book: BookId,
        user: UserId,
        text: &ReviewText,
        meta: EventMeta,
    ) -> Result<Review> {
        let at = to_ms(meta.occurred_at);
        let txn = self.begin().await?;
        let row = reviews::ActiveModel {
            book_id: Set(book.get()),
            user_id: Set(user.get()),
            text: Set(text.as_str().to_owned()),
            created_at: Set(at),
            updated_at: Set(at),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(unique_as(format!(
            "user {user} has already reviewed book {book}"
        )))?;
        let review = to_review(row)?;
        enqueue(
            &txn,
            &Event::reviewed(meta, &review, None),
            meta.occurred_at,
        )
        .await?;
        txn.commit().await.map_err(db_err)?;
        Ok(review)
    }

    async fn update(
        &self,
        book: BookId,
        user: UserId,
        text: &ReviewText,
        meta: EventMeta,
    ) -> Result<ReviewUpdate> {
        let txn = self.begin_write(reviews::Entity).await?;
        // FOR UPDATE on PostgreSQL (SQLite ignores it and is already holding its write lock).
        let old = reviews::Entity::find()
            .filter(reviews::Column::BookId.eq(book.get()))
            .filter(reviews::Column::UserId.eq(user.get()))
            .lock_exclusive()
            .one(&txn)
            .await
            .map_err(db_err)?
            .ok_or_else(|| Error::not_found("review of book", format!("{book} by user {user}")))?;
        let old_length = old.text.chars().count() as u32;
        let mut row: reviews::ActiveModel = old.into();
        row.text = Set(text.as_str().to_owned());
        row.updated_at = Set(to_ms(meta.occurred_at));
        let review = to_review(row.update(&txn).await.map_err(db_err)?)?;
        enqueue(
            &txn,
            &Event::reviewed(meta, &review, Some(old_length)),
            meta.occurred_at,
        )
        .await?;
        txn.commit().await.map_err(db_err)?;
        Ok(ReviewUpdate { review, old_length })
    }

    async fn list_for_book(&self, book: BookId, page: PageRequest) -> Result<Page<Review>> {
        let query = reviews::Entity::find().filter(reviews::Column::BookId.eq(book.get()));
        let total = query.clone().count(&self.db).await.map_err(db_err)?;
        let items = query
            .order_by_asc(reviews::Column::Id)
            .offset(page.offset())
            .limit(u64::from(page.per_page))
            .all(&self.db)
            .await
            .map_err(db_err)?
            .into_iter()
            .map(to_review)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items,
            page: page.page,
            per_page: page.per_page,
            total,
        })
    }
}

#[async_trait]
impl RatingRepository for SqlStore {
    async fn create(
        &self,
        book: BookId,
        user: UserId,
        stars: Stars,
        meta: EventMeta,
    ) -> Result<Rating> {
        let at = to_ms(meta.occurred_at);
        let txn = self.begin().await?;
        let row = ratings::ActiveModel {
            book_id: Set(book.get()),
            user_id: Set(user.get()),
            stars: Set(i32::from(stars.get())),
            created_at: Set(at),
            updated_at: Set(at),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(unique_as(format!(
            "user {user} has already rated book {book}"
        )))?;
        let rating = to_rating(&row)?;
        enqueue(&txn, &Event::rated(meta, &rating, None), meta.occurred_at).await?;
        txn.commit().await.map_err(db_err)?;
        Ok(rating)
    }

    async fn update(
        &self,
        book: BookId,
        user: UserId,
        stars: Stars,
        meta: EventMeta,
    ) -> Result<RatingUpdate> {
        let txn = self.begin_write(ratings::Entity).await?;
        let old_row = ratings::Entity::find()
            .filter(ratings::Column::BookId.eq(book.get()))
            .filter(ratings::Column::UserId.eq(user.get()))
            .lock_exclusive()
            .one(&txn)
            .await
            .map_err(db_err)?
            .ok_or_else(|| Error::not_found("rating of book", format!("{book} by user {user}")))?;
        let old = to_stars(&old_row)?;
        let updated_at = to_ms(meta.occurred_at);
        ratings::Entity::update_many()
            .col_expr(ratings::Column::Stars, Expr::value(i32::from(stars.get())))
            .col_expr(ratings::Column::UpdatedAt, Expr::value(updated_at))
            .filter(ratings::Column::Id.eq(old_row.id))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        let rating = to_rating(&ratings::Model {
            stars: i32::from(stars.get()),
            updated_at,
            ..old_row
        })?;
        enqueue(
            &txn,
            &Event::rated(meta, &rating, Some(old)),
            meta.occurred_at,
        )
        .await?;
        txn.commit().await.map_err(db_err)?;
        Ok(RatingUpdate { rating, old })
    }
}
