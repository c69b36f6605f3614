use folio_domain::events::Event;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn reviews_are_created_once_then_replaced() {
    let app = spawn_app().await;
    let id = app.book("Dune", "SF", 1999).await;
    let (ann, ann_id) = app.reader("ann").await;
    let (bob, _) = app.reader("bob").await;
    let reviews = format!("/api/v1/books/{id}/reviews");

    send(app.cli.post(&reviews).body_json(&json!({"text": "x"})))
        .await
        .problem(401, "bearer");
    let created = app
        .post_as(&ann, &reviews, &json!({"text": "  Great book  "}))
        .await
        .expect(201);
    assert_eq!(created["text"], "Great book");
    assert_eq!(created["user_id"], ann_id);
    app.post_as(&ann, &reviews, &json!({"text": "Again"}))
        .await
        .problem(409, "");
    app.post_as(&bob, &reviews, &json!({"text": "   "}))
        .await
        .problem(422, "review text");
    app.put_as(&bob, &format!("{reviews}/my"), &json!({"text": "Edit"}))
        .await
        .problem(404, "");
    app.post_as(&bob, "/api/v1/books/999/reviews", &json!({"text": "x"}))
        .await
        .problem(404, "book 999");

    let updated = app
        .put_as(
            &ann,
            &format!("{reviews}/my"),
            &json!({"text": "Great book, on reflection"}),
        )
        .await
        .expect(200);
    assert_eq!(updated["old_length"], 10);
    assert_eq!(updated["text"], "Great book, on reflection");
    assert_eq!(updated["id"], created["id"]);

    app.post_as(&bob, &reviews, &json!({"text": "Meh"}))
        .await
        .expect(201);
    let page = app
        .get(&format!("{reviews}?per_page=1&page=2"))
        .await
        .expect(200);
    assert_eq!(page["total"], 2);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    app.get("/api/v1/books/999/reviews")
        .await
        .problem(404, "book 999");

    let events: Vec<(u32, Option<u32>)> = app
        .outbox()
        .into_iter()
        .filter_map(|e| match e {
            Event::BookReviewed {
                length, old_length, ..
            } => Some((length, old_length)),
            _ => None,
        })
        .collect();
    assert_eq!(events, [(10, None), (25, Some(10)), (3, None)]);
    app.assert_outbox_heard(3);
}

#[tokio::test]
async fn ratings_are_one_to_five_and_updates_carry_the_old_value() {
    let app = spawn_app().await;
    let id = app.book("Dune", "SF", 1999).await;
    let (ann, _) = app.reader("ann").await;
    let ratings = format!("/api/v1/books/{id}/ratings");

    for (bad, says) in [
        (0, "at least 1, got 0"),
        (6, "at most 5, got 6"),
        (-1, "at least 1"),
    ] {
        app.post_as(&ann, &ratings, &json!({"rating": bad}))
            .await
            .problem(400, &format!("field `rating` must be {says}"));
    }
    app.post_as(&ann, &ratings, &json!({"rating": "five"}))
        .await
        .problem(400, "rating");
    app.put_as(&ann, &format!("{ratings}/my"), &json!({"rating": 3}))
        .await
        .problem(404, "");

    let created = app
        .post_as(&ann, &ratings, &json!({"rating": 4}))
        .await
        .expect(201);
    assert_eq!(created["rating"], 4);
    app.post_as(&ann, &ratings, &json!({"rating": 5}))
        .await
        .problem(409, "");
    let updated = app
        .put_as(&ann, &format!("{ratings}/my"), &json!({"rating": 2}))
        .await
        .expect(200);
    assert_eq!(updated["rating"], 2);
    assert_eq!(updated["old_rating"], 4);
    send(
        app.cli
            .put(format!("{ratings}/my"))
            .body_json(&json!({"rating": 2})),
    )
    .await
    .problem(401, "bearer");

    let events: Vec<(u8, Option<u8>)> = app
        .outbox()
        .into_iter()
        .filter_map(|e| match e {
            Event::BookRated {
                rating, old_rating, ..
            } => Some((rating, old_rating)),
            _ => None,
        })
        .collect();
    assert_eq!(events, [(4, None), (2, Some(4))]);
    app.assert_outbox_heard(2);
}
