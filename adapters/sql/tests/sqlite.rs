//! What only the SQL store has to prove, on SQLite: migrations, connection handling, file
//! chunking and error mapping. The port contracts themselves run in `folio-tests`
//! (`contract_sqlite`, `contract_postgres`).

use chrono::{TimeZone, Utc};
use folio_domain::accounts::{Email, NewUser, Role};
use folio_domain::catalog::{BookDraft, BookFileUpload};
use folio_domain::events::EventMeta;
use folio_domain::feedback::Stars;
use folio_domain::ids::{BookId, UserId};
use folio_domain::money::Currency;
use folio_domain::ports::{
    BookFileStore, BookRepository, RatingRepository, Readiness, UserRepository,
};
use folio_domain::Error;
use folio_sql::{connect, migrate, SqlStore, CHUNK_SIZE};
use tempfile::TempDir;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn file_url(dir: &TempDir) -> String {
    format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("folio.db").display()
    )
}

fn noon() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
        .single()
        .unwrap_or_default()
}

async fn add_user(store: &SqlStore, email: &str) -> Result<UserId, Error> {
    let user = NewUser {
        email: Email::parse(email)?,
        display_name: "Ann".into(),
        role: Role::User,
        password_hash: "hash".into(),
    };
    Ok(UserRepository::create(store, user, noon()).await?.id)
}

async fn add_book(store: &SqlStore) -> Result<BookId, Error> {
    let usd = Currency::parse("USD")?;
    let draft = BookDraft::new("Dune", "Frank Herbert", "SF", "", 1299, "USD", usd)?;
    Ok(BookRepository::create(store, draft, noon()).await?.id)
}

#[tokio::test]
async fn migrations_run_again_without_harm() -> TestResult {
    let dir = tempfile::tempdir()?;
    let url = file_url(&dir);
    let store = connect(&url).await?;
    add_user(&store, "ann@example.org").await?;
    store.close().await?;

    migrate(&url).await?;
    let store = connect(&url).await?;
    assert_eq!(
        store.count().await?,
        1,
        "data survives re-running migrations"
    );
    assert_eq!(store.backend_name(), "sqlite");
    Ok(())
}

#[tokio::test]
async fn instances_starting_together_all_come_up() -> TestResult {
    let dir = tempfile::tempdir()?;
    let url = file_url(&dir);
    let (a, b, c) = tokio::join!(connect(&url), connect(&url), connect(&url));
    let (a, b, c) = (a?, b?, c?);
    add_user(&a, "ann@example.org").await?;
    assert_eq!(b.count().await?, 1);
    assert_eq!(c.count().await?, 1);
    Ok(())
}

#[tokio::test]
async fn an_in_memory_database_keeps_its_data() -> TestResult {
    let store = connect("sqlite::memory:").await?;
    add_user(&store, "ann@example.org").await?;
    add_user(&store, "bob@example.org").await?;
    assert_eq!(store.count().await?, 2);
    store.check().await?;
    assert_eq!(store.name(), "database");
    Ok(())
}

#[tokio::test]
async fn files_are_stored_and_read_in_chunks() -> TestResult {
    let store = connect("sqlite::memory:").await?;
    let book = add_book(&store).await?;
    let bytes: Vec<u8> = (0..600 * 1024u32).map(|i| (i % 253) as u8).collect();
    store
        .put(
            book,
            BookFileUpload::new("dune.pdf", "application/pdf", bytes.clone())?,
        )
        .await?;

    let (info, mut chunks) = store.open(book).await?.ok_or("the file opens")?;
    assert_eq!(info.size_bytes, 600 * 1024);
    let mut sizes = Vec::new();
    let mut read = Vec::new();
    while let Some(chunk) = chunks.next_chunk().await? {
        sizes.push(chunk.len());
        read.extend(chunk);
    }
    assert_eq!(
        sizes,
        vec![CHUNK_SIZE, CHUNK_SIZE, 600 * 1024 - 2 * CHUNK_SIZE]
    );
    assert!(read == bytes, "the file comes back byte-identical");
    Ok(())
}

#[tokio::test]
async fn a_reader_of_a_replaced_file_stops_instead_of_mixing_files() -> TestResult {
    let store = connect("sqlite::memory:").await?;
    let book = add_book(&store).await?;
    let upload =
        |fill: u8| BookFileUpload::new("dune.pdf", "application/pdf", vec![fill; 2 * CHUNK_SIZE]);
    store.put(book, upload(1)?).await?;
    let (_, mut old) = store.open(book).await?.ok_or("the file opens")?;
    assert_eq!(old.next_chunk().await?, Some(vec![1; CHUNK_SIZE]));

    store.put(book, upload(2)?).await?;
    assert!(matches!(old.next_chunk().await, Err(Error::Conflict(_))));
    let (_, mut new) = store.open(book).await?.ok_or("the new file opens")?;
    assert_eq!(new.next_chunk().await?, Some(vec![2; CHUNK_SIZE]));
    Ok(())
}

#[tokio::test]
async fn a_file_for_an_unknown_book_is_not_found() -> TestResult {
    let store = connect("sqlite::memory:").await?;
    let upload = BookFileUpload::new("x.txt", "text/plain", b"x".to_vec())?;
    assert!(matches!(
        store.put(BookId(42), upload).await,
        Err(Error::NotFound { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn a_rating_of_an_unknown_book_is_refused() -> TestResult {
    let store = connect("sqlite::memory:").await?;
    let user = add_user(&store, "ann@example.org").await?;
    let meta = EventMeta::new(noon());
    let refused = RatingRepository::create(&store, BookId(42), user, Stars::parse(3)?, meta).await;
    assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    Ok(())
}

#[tokio::test]
async fn other_databases_are_refused() -> TestResult {
    assert!(matches!(
        connect("mysql://localhost/folio").await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        folio_sql::fresh_schema_url("sqlite::memory:").await,
        Err(Error::Invalid(_))
    ));
    Ok(())
}

#[tokio::test]
async fn an_unreachable_postgres_is_unavailable() -> TestResult {
    // Port 1 refuses connections at once.
    let err = connect("postgres://folio@127.0.0.1:1/folio").await.err();
    assert!(
        matches!(err, Some(Error::Unavailable("database", _))),
        "{err:?}"
    );
    Ok(())
}
