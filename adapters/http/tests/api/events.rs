//! What a reader sees when the event spool refuses events (full, or its disk failed).

use crate::support::*;

#[tokio::test]
async fn a_refused_view_still_serves_the_page_and_a_refused_download_answers_503() {
    let app = spawn_app().await;
    let id = app.book("Free", "Poetry", 0).await;
    app.upload(id, "text/plain", b"verse".to_vec(), Some("free.txt"))
        .await
        .expect(200);
    let (reader, _) = app.reader("ann").await;
    app.events.set_refusing(true);

    let page = app.get(&format!("/api/v1/books/{id}")).await.expect(200);
    assert_eq!(page["title"], "Free");
    app.get_as(&reader, &format!("/api/v1/books/{id}/download"))
        .await
        .problem(503, "event spool");
    assert!(app.bus_events().is_empty(), "nothing was kept");

    app.events.set_refusing(false);
    app.get(&format!("/api/v1/books/{id}")).await.expect(200);
    assert_eq!(
        app.get_as(&reader, &format!("/api/v1/books/{id}/download"))
            .await
            .expect_bytes(200),
        b"verse"
    );
    assert_eq!((app.views().len(), app.downloads().len()), (1, 1));
}
