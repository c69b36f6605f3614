use folio_domain::events::Event;
use folio_memory::{PaymentMode, SimulatedPayments};
use serde_json::json;

use crate::support::*;

fn purchases(app: &TestApp) -> Vec<Event> {
    app.outbox()
        .into_iter()
        .filter(|e| matches!(e, Event::BookPurchased { .. }))
        .collect()
}

async fn webhook(app: &TestApp, body: &str, signature: Option<&str>) -> Reply {
    let mut rb = app
        .cli
        .post("/api/v1/payments/webhook")
        .content_type("application/json")
        .body(body.to_string());
    if let Some(sig) = signature {
        rb = rb.header("X-Folio-Signature", sig);
    }
    send(rb).await
}

#[tokio::test]
async fn immediate_purchase_completes_and_unlocks_the_download() {
    let app = spawn_app().await;
    let id = app.book("Dune", "SF", 1999).await;
    // Larger than one chunk of the store, with every byte value, to check the stream.
    let file: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    app.upload(id, "application/epub+zip", file.clone(), Some("dune.epub"))
        .await
        .expect(200);
    let (reader, reader_id) = app.reader("ann").await;
    let download = format!("/api/v1/books/{id}/download");

    app.get(&download).await.problem(401, "bearer");
    let p = app
        .get_as(&reader, &download)
        .await
        .problem(402, "buy book");
    assert_eq!(p["type"], "urn:folio:problem:payment-required");
    assert!(app.downloads().is_empty());

    let bought = app
        .post_as(&reader, &format!("/api/v1/books/{id}/purchase"), &json!({}))
        .await
        .expect(201);
    assert_eq!(bought["status"], "COMPLETED");
    assert_eq!(bought["book_id"], id);
    assert_eq!(bought["user_id"], reader_id);
    assert_eq!(
        bought["price"],
        json!({"amount_cents": 1999, "currency": "USD"})
    );
    assert_eq!(bought["completed_at"], "2025-03-01T10:00:00Z");
    assert_eq!(purchases(&app).len(), 1);

    let r = app.get_as(&reader, &download).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.header("content-type"), "application/epub+zip");
    assert_eq!(
        r.header("content-disposition"),
        "attachment; filename=\"dune.epub\""
    );
    assert_eq!(r.body.len(), file.len());
    assert!(r.body == file, "downloaded bytes differ from the upload");
    let downloads = app.downloads();
    assert_eq!(downloads.len(), 1);
    assert!(
        matches!(downloads[0], Event::BookDownloaded { user_id, .. } if user_id.get() == reader_id)
    );

    app.post_as(&reader, &format!("/api/v1/books/{id}/purchase"), &json!({}))
        .await
        .problem(409, "already bought");
    assert_eq!(purchases(&app).len(), 1);
    app.assert_outbox_heard(1);
}

#[tokio::test]
async fn free_books_and_missing_files() {
    let app = spawn_app().await;
    let free = app.book("Free", "SF", 0).await;
    let (reader, _) = app.reader("ann").await;
    app.get_as(&reader, &format!("/api/v1/books/{free}/download"))
        .await
        .problem(404, "file of book");
    app.upload(free, "text/plain", b"hello".to_vec(), None)
        .await
        .expect(200);
    let r = app
        .get_as(&reader, &format!("/api/v1/books/{free}/download"))
        .await;
    assert_eq!(r.expect_bytes(200), b"hello");
    assert_eq!(
        r.header("content-disposition"),
        format!("attachment; filename=\"book-{free}.txt\"")
    );
    app.post_as(
        &reader,
        &format!("/api/v1/books/{free}/purchase"),
        &json!({}),
    )
    .await
    .problem(409, "free");
    app.post_as(&reader, "/api/v1/books/999/purchase", &json!({}))
        .await
        .problem(404, "book 999");
    app.get_as(&reader, "/api/v1/books/999/download")
        .await
        .problem(404, "book 999");
    assert!(purchases(&app).is_empty());
}

#[tokio::test]
async fn deferred_purchase_completes_through_an_idempotent_webhook() {
    let app = spawn_with(Options {
        payments: PaymentMode::Deferred,
        ..Options::default()
    })
    .await;
    let id = app.book("Dune", "SF", 1999).await;
    app.upload(id, "text/plain", b"spice".to_vec(), None)
        .await
        .expect(200);
    let (reader, _) = app.reader("ann").await;
    let pending = app
        .post_as(&reader, &format!("/api/v1/books/{id}/purchase"), &json!({}))
        .await
        .expect(202);
    assert_eq!(pending["status"], "PENDING");
    assert_eq!(pending["completed_at"], serde_json::Value::Null);
    let purchase_id = pending["id"].as_i64().expect("id");
    app.post_as(&reader, &format!("/api/v1/books/{id}/purchase"), &json!({}))
        .await
        .problem(409, "waiting for payment");
    app.get_as(&reader, &format!("/api/v1/books/{id}/download"))
        .await
        .problem(402, "buy");

    let body = json!({"purchase_id": purchase_id, "payment_ref": format!("sim-{purchase_id}"), "status": "succeeded"})
        .to_string();
    webhook(&app, &body, None)
        .await
        .problem(401, "X-Folio-Signature");
    let wrong = SimulatedPayments::sign(b"not the secret", body.as_bytes());
    webhook(&app, &body, Some(&wrong))
        .await
        .problem(401, "signature");
    webhook(&app, &body, Some("sha256=zz"))
        .await
        .problem(401, "sha256");
    assert!(
        purchases(&app).is_empty(),
        "a rejected webhook completes nothing"
    );

    let sig = SimulatedPayments::sign(WEBHOOK_SECRET, body.as_bytes());
    let done = webhook(&app, &body, Some(&sig)).await.expect(200);
    // Senders that leave out Content-Type are answered the same way.
    let bare = send(
        app.cli
            .post("/api/v1/payments/webhook")
            .header("X-Folio-Signature", &sig)
            .body(body.clone()),
    )
    .await;
    assert_eq!(bare.expect(200), done);
    assert_eq!(done["id"], purchase_id);
    assert_eq!(done["status"], "COMPLETED");
    let again = webhook(&app, &body, Some(&sig)).await.expect(200);
    assert_eq!(again, done, "a retried webhook answers the same purchase");
    assert_eq!(purchases(&app).len(), 1, "and records one purchase event");
    app.assert_outbox_heard(1);

    let r = app
        .get_as(&reader, &format!("/api/v1/books/{id}/download"))
        .await;
    assert_eq!(r.expect_bytes(200), b"spice");

    let garbage = "not json";
    let sig = SimulatedPayments::sign(WEBHOOK_SECRET, garbage.as_bytes());
    webhook(&app, garbage, Some(&sig))
        .await
        .problem(422, "webhook body");
    let unknown =
        json!({"purchase_id": 999, "payment_ref": "sim-999", "status": "succeeded"}).to_string();
    let sig = SimulatedPayments::sign(WEBHOOK_SECRET, unknown.as_bytes());
    webhook(&app, &unknown, Some(&sig))
        .await
        .problem(404, "999");
}

#[tokio::test]
async fn declined_payments_are_402_and_can_be_retried() {
    let app = spawn_with(Options {
        payments: PaymentMode::Decline,
        ..Options::default()
    })
    .await;
    let id = app.book("Dune", "SF", 1999).await;
    let (reader, _) = app.reader("ann").await;
    for _ in 0..2 {
        app.post_as(&reader, &format!("/api/v1/books/{id}/purchase"), &json!({}))
            .await
            .problem(402, "declined");
    }
    assert!(purchases(&app).is_empty());
}
