use serde_json::{json, Value};

use crate::support::*;

fn dune() -> Value {
    json!({"title": "Dune", "author": "Frank Herbert", "genre": "Science Fiction",
           "description": "Spice.", "price_cents": 1999, "currency": "USD"})
}

#[tokio::test]
async fn admin_manages_the_catalog() {
    let app = spawn_app().await;
    let created = app
        .post_as(&app.admin, "/api/v1/books", &dune())
        .await
        .expect(201);
    let id = created["id"].as_i64().expect("id");
    assert_eq!(
        created["price"],
        json!({"amount_cents": 1999, "currency": "USD"})
    );
    assert_eq!(created["free"], false);
    assert_eq!(created["file"], Value::Null);
    assert_eq!(created["title"], "Dune");

    let mut changed = dune();
    changed["title"] = json!("Dune Messiah");
    changed["price_cents"] = json!(0);
    changed.as_object_mut().expect("object").remove("currency");
    let updated = app
        .put_as(&app.admin, &format!("/api/v1/books/{id}"), &changed)
        .await
        .expect(200);
    assert_eq!(updated["title"], "Dune Messiah");
    assert_eq!(updated["free"], true);
    assert_eq!(updated["price"]["currency"], "USD");

    let shown = app.get(&format!("/api/v1/books/{id}")).await.expect(200);
    assert_eq!(shown, updated);

    let r = app
        .delete_as(&app.admin, &format!("/api/v1/books/{id}"))
        .await;
    assert_eq!(r.expect(204), Value::Null);
    app.get(&format!("/api/v1/books/{id}"))
        .await
        .problem(404, &format!("book {id} not found"));
    app.delete_as(&app.admin, &format!("/api/v1/books/{id}"))
        .await
        .problem(404, "not found");
    app.put_as(&app.admin, &format!("/api/v1/books/{id}"), &dune())
        .await
        .problem(404, "not found");
    assert_eq!(app.total_books().await, 0);
}

#[tokio::test]
async fn only_admins_change_the_catalog() {
    let app = spawn_app().await;
    let id = app.book("Dune", "SF", 1999).await;
    let (reader, _) = app.reader("ann").await;
    let path = format!("/api/v1/books/{id}");

    send(app.cli.post("/api/v1/books").body_json(&dune()))
        .await
        .problem(401, "bearer");
    app.post_as(&reader, "/api/v1/books", &dune())
        .await
        .problem(403, "ADMIN");
    send(app.cli.put(&path).body_json(&dune()))
        .await
        .problem(401, "bearer");
    app.put_as(&reader, &path, &dune())
        .await
        .problem(403, "ADMIN");
    send(app.cli.delete(&path)).await.problem(401, "bearer");
    app.delete_as(&reader, &path).await.problem(403, "ADMIN");
    let r = send(
        app.cli
            .put(format!("{path}/file"))
            .header("authorization", bearer(&reader))
            .content_type("text/plain")
            .body("hello"),
    )
    .await;
    r.problem(403, "ADMIN");

    assert_eq!(app.total_books().await, 1);
    assert_eq!(app.get(&path).await.expect(200)["title"], "Dune");
}

#[tokio::test]
async fn invalid_books_are_422_and_never_stored() {
    let app = spawn_app().await;
    app.book("Dune", "SF", 1999).await;
    let bad =
        json!({"title": " ", "author": "", "genre": "SF", "price_cents": 1, "currency": "EUR"});
    let p = app
        .post_as(&app.admin, "/api/v1/books", &bad)
        .await
        .problem(422, "title must not be empty");
    let detail = p["detail"].as_str().expect("detail");
    for field in ["author", "currency"] {
        assert!(detail.contains(field), "{detail} does not name {field}");
    }
    // Outside the range the schema declares: 400, like any value of the wrong shape.
    app.post_as(
        &app.admin,
        "/api/v1/books",
        &json!({"title": "X", "author": "Y", "genre": "Z", "price_cents": -1}),
    )
    .await
    .problem(400, "field `price_cents` must be at least 0, got -1");
    app.post_as(
        &app.admin,
        "/api/v1/books",
        &json!({"title": "X", "author": "Y", "genre": "Z"}),
    )
    .await
    .problem(400, "price_cents");
    app.post_as(
        &app.admin,
        "/api/v1/books",
        &json!({"title": "X", "author": "Y", "genre": "Z", "price_cents": "free"}),
    )
    .await
    .problem(400, "price_cents");
    assert_eq!(app.total_books().await, 1);
}

#[tokio::test]
async fn listing_pages_and_filters() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.book(
            &format!("Book {i}"),
            if i % 2 == 0 { "SF" } else { "Poetry" },
            100,
        )
        .await;
    }
    let page = app.get("/api/v1/books?page=2&per_page=2").await.expect(200);
    assert_eq!(page["page"], 2);
    assert_eq!(page["per_page"], 2);
    assert_eq!(page["total"], 5);
    let titles: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|b| b["title"].as_str().expect("title"))
        .collect();
    assert_eq!(titles, ["Book 2", "Book 3"]);

    let sf = app.get("/api/v1/books?genre=SF").await.expect(200);
    assert_eq!(sf["total"], 3);
    assert_eq!(sf["per_page"], 20);

    app.get("/api/v1/books?page=abc").await.problem(400, "page");
    // The document declares the ranges, so a value outside them is 400 like `abc`.
    app.get("/api/v1/books?page=0")
        .await
        .problem(400, "parameter `page`: verification failed. minimum(1");
    app.get("/api/v1/books?per_page=101").await.problem(
        400,
        "parameter `per_page`: verification failed. maximum(100",
    );
    app.get("/api/v1/books/abc").await.problem(400, "id");
    app.get("/api/v1/books/0")
        .await
        .problem(400, "parameter `id`: verification failed. minimum(1");
}

#[tokio::test]
async fn showing_a_book_emits_exactly_one_view() {
    let app = spawn_app().await;
    let id = app.book("Dune", "SF", 1999).await;
    let (reader, reader_id) = app.reader("ann").await;
    assert!(app.views().is_empty());

    app.get(&format!("/api/v1/books/{id}")).await.expect(200);
    let views = app.views();
    assert_eq!(views.len(), 1);
    assert!(
        matches!(views[0], folio_domain::events::Event::BookViewed { book_id, user_id: None, .. } if book_id.get() == id),
        "{views:?}"
    );

    app.get_as(&reader, &format!("/api/v1/books/{id}"))
        .await
        .expect(200);
    let views = app.views();
    assert_eq!(views.len(), 2);
    assert!(
        matches!(views[1], folio_domain::events::Event::BookViewed { user_id: Some(u), .. } if u.get() == reader_id),
        "{views:?}"
    );

    // A bad token is refused rather than counted as anonymous; unknown books count nothing.
    app.get_as("garbage", &format!("/api/v1/books/{id}"))
        .await
        .problem(401, "malformed");
    app.get("/api/v1/books/999").await.problem(404, "book 999");
    assert_eq!(app.views().len(), 2);
}

#[tokio::test]
async fn uploads_store_the_file_and_its_metadata() {
    let app = spawn_app().await;
    let id = app.book("Dune", "SF", 1999).await;
    let info = app
        .upload(
            id,
            "application/epub+zip",
            b"PK epub bytes".to_vec(),
            Some("dune.epub"),
        )
        .await
        .expect(200);
    assert_eq!(
        info,
        json!({"file_name": "dune.epub", "content_type": "application/epub+zip", "size_bytes": 13})
    );
    let book = app.get(&format!("/api/v1/books/{id}")).await.expect(200);
    assert_eq!(book["file"], info);

    let info = app
        .upload(id, "application/pdf", b"%PDF".to_vec(), None)
        .await
        .expect(200);
    assert_eq!(info["file_name"], format!("book-{id}.pdf"));

    app.upload(id, "text/plain", Vec::new(), None)
        .await
        .problem(422, "empty");
    app.upload(id, "text/plain", b"x".to_vec(), Some("../etc/passwd"))
        .await
        .problem(422, "file_name must be");
    app.upload(999, "text/plain", b"x".to_vec(), None)
        .await
        .problem(404, "book 999");
    let r = send(
        app.cli
            .put(format!("/api/v1/books/{id}/file"))
            .header("authorization", bearer(&app.admin))
            .header("content-length", (64 * 1024 * 1024 + 1).to_string())
            .content_type("text/plain")
            .body("x"),
    )
    .await;
    r.problem(413, "larger than");
    // The last good upload is still there.
    let book = app.get(&format!("/api/v1/books/{id}")).await.expect(200);
    assert_eq!(book["file"]["content_type"], "application/pdf");
}
