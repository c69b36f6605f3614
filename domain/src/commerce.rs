//! Purchases and payments.

use chrono::{DateTime, Utc};

use crate::ids::{BookId, PurchaseId, UserId};
use crate::money::Money;

/// Where a purchase stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PurchaseStatus {
    /// Created; the payment provider has not confirmed yet.
    Pending,
    /// Paid. Its `book_purchased` event was written to the outbox in the same transaction.
    Completed,
    /// The provider declined; the user may try again.
    Failed,
}

impl PurchaseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PurchaseStatus::Pending => "PENDING",
            PurchaseStatus::Completed => "COMPLETED",
            PurchaseStatus::Failed => "FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(PurchaseStatus::Pending),
            "COMPLETED" => Some(PurchaseStatus::Completed),
            "FAILED" => Some(PurchaseStatus::Failed),
            _ => None,
        }
    }
}

/// One user's purchase of one book. There is at most one per (user, book).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    pub id: PurchaseId,
    pub user_id: UserId,
    pub book_id: BookId,
    pub price: Money,
    pub status: PurchaseStatus,
    /// The payment provider's reference, once it has one.
    pub payment_ref: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// What a payment provider answers to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Paid now.
    Confirmed { payment_ref: String },
    /// Accepted; the provider confirms later through the webhook.
    Pending { payment_ref: String },
    /// Declined, with the provider's reason.
    Declined { reason: String },
}

/// A verified notification from the payment provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentNotification {
    pub purchase_id: PurchaseId,
    pub payment_ref: String,
    pub succeeded: bool,
}

/// What confirming a purchase did. Retried webhooks get `AlreadyCompleted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Completed(Purchase),
    AlreadyCompleted(Purchase),
}
