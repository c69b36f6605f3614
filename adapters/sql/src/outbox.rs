//! The transactional outbox: repositories [`enqueue`] an event in the transaction that
//! changes its row; the relay claims, publishes and marks entries through [`Outbox`].

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use folio_domain::events::Event;
use folio_domain::ports::{Outbox, OutboxEntry};
use folio_domain::{Error, Result};
use sea_orm::sea_query::{Expr, LockBehavior, LockType, Order, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, Set,
};
use tracing::error;

use crate::entity::outbox;
use crate::error::db_err;
use crate::store::SqlStore;
use crate::time::{from_ms, to_ms};

/// Writes `event` to the outbox on `txn`, so it commits (or not) with the caller's row.
pub(crate) async fn enqueue(
    txn: &impl ConnectionTrait,
    event: &Event,
    at: DateTime<Utc>,
) -> Result<()> {
    let payload = String::from_utf8(event.encode()).map_err(Error::internal)?;
    outbox::ActiveModel {
        topic: Set(event.topic().name().to_owned()),
        record_key: Set(event.key()),
        payload: Set(payload),
        created_at: Set(to_ms(at)),
        claimed_until: Set(None),
        published_at: Set(None),
        ..Default::default()
    }
    .insert(txn)
    .await
    .map_err(db_err)?;
    Ok(())
}

#[async_trait]
impl Outbox for SqlStore {
    async fn claim(
        &self,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<OutboxEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now_ms = to_ms(now);
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        let mut claimable = Query::select()
            .column(outbox::Column::Id)
            .from(outbox::Entity)
            .and_where(Expr::col(outbox::Column::PublishedAt).is_null())
            .and_where(
                Expr::col(outbox::Column::ClaimedUntil)
                    .is_null()
                    .or(Expr::col(outbox::Column::ClaimedUntil).lt(now_ms)),
            )
            .order_by(outbox::Column::Id, Order::Asc)
            .limit(u64::from(limit))
            .to_owned();
        if self.backend() == DbBackend::Postgres {
            // Another relay's claim in flight is skipped rather than waited for.
            claimable.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        // One statement selects and leases the entries, so it is atomic on both backends
        // (SQLite takes its write lock for the whole statement).
        let claim = Query::update()
            .table(outbox::Entity)
            .value(
                outbox::Column::ClaimedUntil,
                now_ms.saturating_add(lease_ms),
            )
            .and_where(Expr::col(outbox::Column::Id).in_subquery(claimable))
            .returning(Query::returning().columns([outbox::Column::Id, outbox::Column::Payload]))
            .to_owned();
        let rows = self
            .db
            .query_all(self.backend().build(&claim))
            .await
            .map_err(db_err)?;
        let mut entries = Vec::with_capacity(rows.len());
        for row in rows {
            let id: i64 = row.try_get("", "id").map_err(db_err)?;
            let payload: String = row.try_get("", "payload").map_err(db_err)?;
            match Event::decode(payload.as_bytes()) {
                Ok(event) => entries.push(OutboxEntry { id, event }),
                // Skipped, not fatal: one bad row must not stop the relay. It stays in the
                // backlog for an operator to see.
                Err(e) => {
                    error!(outbox_id = id, error = %e, "outbox entry is not a valid event; skipping it")
                }
            }
        }
        // RETURNING gives no order; the relay publishes oldest first.
        entries.sort_by_key(|e| e.id);
        Ok(entries)
    }

    async fn mark_published(&self, ids: &[i64], now: DateTime<Utc>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        outbox::Entity::update_many()
            .col_expr(outbox::Column::PublishedAt, Expr::value(to_ms(now)))
            .filter(outbox::Column::Id.is_in(ids.iter().copied()))
            .exec(&self.db)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn backlog(&self) -> Result<u64> {
        outbox::Entity::find()
            .filter(outbox::Column::PublishedAt.is_null())
            .count(&self.db)
            .await
            .map_err(db_err)
    }

    async fn oldest_pending(&self) -> Result<Option<DateTime<Utc>>> {
        let oldest = outbox::Entity::find()
            .filter(outbox::Column::PublishedAt.is_null())
            .order_by_asc(outbox::Column::CreatedAt)
            .one(&self.db)
            .await
            .map_err(db_err)?;
        oldest.map(|row| from_ms(row.created_at)).transpose()
    }
}
