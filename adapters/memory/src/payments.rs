use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use folio_domain::commerce::{ChargeOutcome, PaymentNotification, Purchase};
use folio_domain::ids::PurchaseId;
use folio_domain::ports::PaymentProvider;
use folio_domain::{Error, Result};

/// The header carrying a webhook's signature: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Folio-Signature";

/// How the simulated provider answers a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentMode {
    /// Confirms at once (the default).
    Immediate,
    /// Accepts and leaves confirmation to the webhook.
    Deferred,
    /// Declines every charge.
    Decline,
}

/// The built-in payment provider. Webhook bodies are JSON
/// `{"purchase_id": 1, "payment_ref": "sim-1", "status": "succeeded" | "failed"}`, signed
/// with HMAC-SHA256 under the shared secret.
#[derive(Clone)]
pub struct SimulatedPayments {
    secret: Vec<u8>,
    mode: PaymentMode,
}

impl std::fmt::Debug for SimulatedPayments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedPayments")
            .field("mode", &self.mode)
            .finish()
    }
}

#[derive(Deserialize)]
struct Notification {
    purchase_id: i64,
    payment_ref: String,
    status: String,
}

impl SimulatedPayments {
    pub fn new(secret: &[u8], mode: PaymentMode) -> Self {
        SimulatedPayments {
            secret: secret.to_vec(),
            mode,
        }
    }

    /// The signature header value for `body` under `secret`.
    pub fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = mac(secret);
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256={hex}")
    }

    /// The payment reference the provider gives a purchase.
    pub fn payment_ref(purchase: PurchaseId) -> String {
        format!("sim-{purchase}")
    }
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"))
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[async_trait]
impl PaymentProvider for SimulatedPayments {
    async fn charge(&self, purchase: &Purchase) -> Result<ChargeOutcome> {
        let payment_ref = Self::payment_ref(purchase.id);
        Ok(match self.mode {
            PaymentMode::Immediate => ChargeOutcome::Confirmed { payment_ref },
            PaymentMode::Deferred => ChargeOutcome::Pending { payment_ref },
            PaymentMode::Decline => ChargeOutcome::Declined {
                reason: "the simulated provider declines every charge".into(),
            },
        })
    }

    fn verify_notification(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<PaymentNotification> {
        let sig = signature.ok_or_else(|| {
            Error::Unauthenticated(format!("the {SIGNATURE_HEADER} header is missing"))
        })?;
        let raw = sig
            .strip_prefix("sha256=")
            .and_then(from_hex)
            .ok_or_else(|| {
                Error::Unauthenticated(format!("{SIGNATURE_HEADER} must be sha256=<hex>"))
            })?;
        let mut mac = mac(&self.secret);
        mac.update(body);
        mac.verify_slice(&raw)
            .map_err(|_| Error::Unauthenticated("the webhook signature does not match".into()))?;
        let n: Notification = serde_json::from_slice(body)
            .map_err(|e| Error::invalid(format!("webhook body: {e}")))?;
        let succeeded = match n.status.as_str() {
            "succeeded" => true,
            "failed" => false,
            other => {
                return Err(Error::invalid(format!(
                    "webhook status must be succeeded or failed, got {other:?}"
                )))
            }
        };
        Ok(PaymentNotification {
            purchase_id: PurchaseId::parse(n.purchase_id)?,
            payment_ref: n.payment_ref,
            succeeded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_notifications_verify_and_tampered_ones_do_not() {
        let p = SimulatedPayments::new(b"s3cret", PaymentMode::Deferred);
        let body = br#"{"purchase_id":4,"payment_ref":"sim-4","status":"succeeded"}"#;
        let sig = SimulatedPayments::sign(b"s3cret", body);
        let n = p.verify_notification(body, Some(&sig)).expect("valid");
        assert_eq!(n.purchase_id, PurchaseId(4));
        assert!(n.succeeded);
        let tampered = br#"{"purchase_id":5,"payment_ref":"sim-4","status":"succeeded"}"#;
        assert!(matches!(
            p.verify_notification(tampered, Some(&sig)),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            p.verify_notification(body, None),
            Err(Error::Unauthenticated(_))
        ));
        let other = SimulatedPayments::sign(b"wrong", body);
        assert!(matches!(
            p.verify_notification(body, Some(&other)),
            Err(Error::Unauthenticated(_))
        ));
    }
}
