//! `PurchaseRepository`: purchases, with the `book_purchased` event written to the outbox
//! in the transaction that completes the purchase.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use folio_domain::commerce::{ConfirmOutcome, Purchase, PurchaseStatus};
use folio_domain::events::{Event, EventMeta};
use folio_domain::ids::{BookId, PurchaseId, UserId};
use folio_domain::money::{Currency, Money};
use folio_domain::ports::PurchaseRepository;
use folio_domain::{Error, Result};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use crate::entity::purchases;
use crate::error::{corrupt, db_err, unique_as};
use crate::outbox::enqueue;
use crate::store::SqlStore;
use crate::time::{from_ms, from_ms_opt, to_ms};

fn to_purchase(m: purchases::Model) -> Result<Purchase> {
    let currency = Currency::parse(&m.currency)
        .map_err(|_| corrupt(format!("currency of purchase {}", m.id)))?;
    Ok(Purchase {
        id: PurchaseId(m.id),
        user_id: UserId(m.user_id),
        book_id: BookId(m.book_id),
        price: Money::new(m.price_cents, currency),
        status: PurchaseStatus::parse(&m.status)
            .ok_or_else(|| corrupt(format!("status {:?} of purchase {}", m.status, m.id)))?,
        payment_ref: m.payment_ref,
        created_at: from_ms(m.created_at)?,
        completed_at: from_ms_opt(m.completed_at)?,
    })
}

async fn find_purchase(db: &impl ConnectionTrait, id: PurchaseId) -> Result<Option<Purchase>> {
    purchases::Entity::find_by_id(id.get())
        .one(db)
        .await
        .map_err(db_err)?
        .map(to_purchase)
        .transpose()
}

/// Moves a PENDING purchase to `to`. The status check is in the UPDATE's WHERE clause, so
/// of two concurrent confirmations exactly one changes the row.
async fn transition(
    db: &impl ConnectionTrait,
    id: PurchaseId,
    to: PurchaseStatus,
    payment_ref: &str,
    completed_at: Option<i64>,
) -> Result<bool> {
    let mut update = purchases::Entity::update_many()
        .col_expr(purchases::Column::Status, Expr::value(to.as_str()))
        .col_expr(purchases::Column::PaymentRef, Expr::value(payment_ref))
        .filter(purchases::Column::Id.eq(id.get()))
        .filter(purchases::Column::Status.eq(PurchaseStatus::Pending.as_str()));
    if let Some(at) = completed_at {
        update = update.col_expr(purchases::Column::CompletedAt, Expr::value(at));
    }
    let done = update.exec(db).await.map_err(db_err)?;
    Ok(done.rows_affected == 1)
}

#[async_trait]
impl PurchaseRepository for SqlStore {
    async fn create_pending(
        &self,
        user: UserId,
        book: BookId,
        price: Money,
        at: DateTime<Utc>,
    ) -> Result<Purchase> {
        let txn = self.begin().await?;
        // A failed attempt makes way for a new one with a new id, so a late notification
        // about the failed attempt cannot touch the new purchase.
        purchases::Entity::delete_many()
            .filter(purchases::Column::UserId.eq(user.get()))
            .filter(purchases::Column::BookId.eq(book.get()))
            .filter(purchases::Column::Status.eq(PurchaseStatus::Failed.as_str()))
            .exec(&txn)
            .await
            .map_err(db_err)?;
        let row = purchases::ActiveModel {
            user_id: Set(user.get()),
            book_id: Set(book.get()),
            price_cents: Set(price.amount_cents),
            currency: Set(price.currency.as_str().to_owned()),
            status: Set(PurchaseStatus::Pending.as_str().to_owned()),
            payment_ref: Set(None),
            created_at: Set(to_ms(at)),
            completed_at: Set(None),
            ..Default::default()
        }
        .insert(&txn)
        .await
        .map_err(unique_as(format!(
            "user {user} already has a pending or completed purchase of book {book}"
        )))?;
        txn.commit().await.map_err(db_err)?;
        to_purchase(row)
    }

    async fn get(&self, id: PurchaseId) -> Result<Option<Purchase>> {
        find_purchase(&self.db, id).await
    }

    async fn find(&self, user: UserId, book: BookId) -> Result<Option<Purchase>> {
        purchases::Entity::find()
            .filter(purchases::Column::UserId.eq(user.get()))
            .filter(purchases::Column::BookId.eq(book.get()))
            .one(&self.db)
            .await
            .map_err(db_err)?
            .map(to_purchase)
            .transpose()
    }

    async fn complete(
        &self,
        id: PurchaseId,
        payment_ref: &str,
        meta: EventMeta,
    ) -> Result<ConfirmOutcome> {
        let txn = self.begin().await?;
        let changed = transition(
            &txn,
            id,
            PurchaseStatus::Completed,
            payment_ref,
            Some(to_ms(meta.occurred_at)),
        )
        .await?;
        let purchase = find_purchase(&txn, id)
            .await?
            .ok_or_else(|| Error::not_found("purchase", id))?;
        if changed {
            enqueue(&txn, &Event::purchased(meta, &purchase), meta.occurred_at).await?;
            txn.commit().await.map_err(db_err)?;
            return Ok(ConfirmOutcome::Completed(purchase));
        }
        match purchase.status {
            PurchaseStatus::Completed => Ok(ConfirmOutcome::AlreadyCompleted(purchase)),
            PurchaseStatus::Failed => Err(Error::Conflict(format!(
                "purchase {id} failed; it cannot be completed"
            ))),
            PurchaseStatus::Pending => Err(Error::Internal(format!(
                "purchase {id} stayed pending after its completion"
            ))),
        }
    }

    async fn fail(&self, id: PurchaseId, payment_ref: &str) -> Result<Purchase> {
        // Whether this call or an earlier one failed it, the row now says where it stands.
        transition(&self.db, id, PurchaseStatus::Failed, payment_ref, None).await?;
        let purchase = find_purchase(&self.db, id)
            .await?
            .ok_or_else(|| Error::not_found("purchase", id))?;
        match purchase.status {
            PurchaseStatus::Completed => Err(Error::Conflict(format!(
                "purchase {id} already completed; it cannot fail"
            ))),
            PurchaseStatus::Failed => Ok(purchase),
            PurchaseStatus::Pending => Err(Error::Internal(format!(
                "purchase {id} stayed pending after failing it"
            ))),
        }
    }
}
