//! The first schema: catalog, accounts, commerce, feedback, the outbox and window
//! statistics. Times are BIGINT milliseconds since the Unix epoch (UTC), the precision the
//! events carry, so comparisons and MIN/MAX behave identically on SQLite and PostgreSQL.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20260101_000001_initial"
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    DisplayName,
    Role,
    PasswordHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Books {
    Table,
    Id,
    Title,
    Author,
    Genre,
    Description,
    PriceCents,
    Currency,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum BookFiles {
    Table,
    Id,
    BookId,
    FileName,
    ContentType,
    SizeBytes,
    ChunkCount,
    CreatedAt,
}

#[derive(DeriveIden)]
enum BookFileChunks {
    Table,
    FileId,
    Seq,
    Data,
}

#[derive(DeriveIden)]
enum Purchases {
    Table,
    Id,
    UserId,
    BookId,
    PriceCents,
    Currency,
    Status,
    PaymentRef,
    CreatedAt,
    CompletedAt,
}

#[derive(DeriveIden)]
enum Reviews {
    Table,
    Id,
    BookId,
    UserId,
    Text,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Ratings {
    Table,
    Id,
    BookId,
    UserId,
    Stars,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    Topic,
    RecordKey,
    Payload,
    CreatedAt,
    ClaimedUntil,
    PublishedAt,
}

#[derive(DeriveIden)]
enum WindowStats {
    Table,
    WindowStart,
    BookId,
    SourceTopic,
    SourcePartition,
    WindowEnd,
    FirstOffset,
    NextOffset,
    Events,
    Anonymous,
    FirstAt,
    LastAt,
    RevenueCents,
    Currency,
    ReviewsCreated,
    ReviewsUpdated,
    ReviewLengthDelta,
    RatingsCreated,
    RatingsUpdated,
    RatingSumDelta,
    R1,
    R2,
    R3,
    R4,
    R5,
    SubmittedRatingSum,
    UsersSketch,
    StoredAt,
}

fn id(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

fn big(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().to_owned()
}

fn big_null(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).big_integer().null().to_owned()
}

fn counter(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col)
        .big_integer()
        .not_null()
        .default(0)
        .to_owned()
}

fn string(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string().not_null().to_owned()
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).text().not_null().to_owned()
}

fn fk(
    name: &str,
    from: (impl IntoIden + 'static, impl IntoIden + 'static),
    to: (impl IntoIden + 'static, impl IntoIden + 'static),
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .to_owned()
}

fn index(name: &str, table: impl IntoIden + 'static) -> IndexCreateStatement {
    Index::create()
        .if_not_exists()
        .name(name)
        .table(table)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .if_not_exists()
                    .col(id(Users::Id))
                    .col(string(Users::Email))
                    .col(string(Users::DisplayName))
                    .col(string(Users::Role))
                    .col(string(Users::PasswordHash))
                    .col(big(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("users_email_key", Users::Table)
                    .col(Users::Email)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Books::Table)
                    .if_not_exists()
                    .col(id(Books::Id))
                    .col(string(Books::Title))
                    .col(string(Books::Author))
                    .col(string(Books::Genre))
                    .col(text(Books::Description))
                    .col(big(Books::PriceCents))
                    .col(string(Books::Currency))
                    .col(big(Books::CreatedAt))
                    .col(big(Books::UpdatedAt))
                    .col(big_null(Books::DeletedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("books_genre_idx", Books::Table)
                    .col(Books::Genre)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BookFiles::Table)
                    .if_not_exists()
                    .col(id(BookFiles::Id))
                    .col(big(BookFiles::BookId))
                    .col(string(BookFiles::FileName))
                    .col(string(BookFiles::ContentType))
                    .col(big(BookFiles::SizeBytes))
                    .col(ColumnDef::new(BookFiles::ChunkCount).integer().not_null())
                    .col(big(BookFiles::CreatedAt))
                    .foreign_key(&mut fk(
                        "book_files_book_fk",
                        (BookFiles::Table, BookFiles::BookId),
                        (Books::Table, Books::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("book_files_book_key", BookFiles::Table)
                    .col(BookFiles::BookId)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BookFileChunks::Table)
                    .if_not_exists()
                    .col(big(BookFileChunks::FileId))
                    .col(ColumnDef::new(BookFileChunks::Seq).integer().not_null())
                    .col(ColumnDef::new(BookFileChunks::Data).blob().not_null())
                    .primary_key(
                        Index::create()
                            .col(BookFileChunks::FileId)
                            .col(BookFileChunks::Seq),
                    )
                    .foreign_key(
                        fk(
                            "book_file_chunks_file_fk",
                            (BookFileChunks::Table, BookFileChunks::FileId),
                            (BookFiles::Table, BookFiles::Id),
                        )
                        .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Purchases::Table)
                    .if_not_exists()
                    .col(id(Purchases::Id))
                    .col(big(Purchases::UserId))
                    .col(big(Purchases::BookId))
                    .col(big(Purchases::PriceCents))
                    .col(string(Purchases::Currency))
                    .col(string(Purchases::Status))
                    .col(ColumnDef::new(Purchases::PaymentRef).string().null())
                    .col(big(Purchases::CreatedAt))
                    .col(big_null(Purchases::CompletedAt))
                    .foreign_key(&mut fk(
                        "purchases_user_fk",
                        (Purchases::Table, Purchases::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .foreign_key(&mut fk(
                        "purchases_book_fk",
                        (Purchases::Table, Purchases::BookId),
                        (Books::Table, Books::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("purchases_user_book_key", Purchases::Table)
                    .col(Purchases::UserId)
                    .col(Purchases::BookId)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Reviews::Table)
                    .if_not_exists()
                    .col(id(Reviews::Id))
                    .col(big(Reviews::BookId))
                    .col(big(Reviews::UserId))
                    .col(text(Reviews::Text))
                    .col(big(Reviews::CreatedAt))
                    .col(big(Reviews::UpdatedAt))
                    .foreign_key(&mut fk(
                        "reviews_user_fk",
                        (Reviews::Table, Reviews::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .foreign_key(&mut fk(
                        "reviews_book_fk",
                        (Reviews::Table, Reviews::BookId),
                        (Books::Table, Books::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("reviews_user_book_key", Reviews::Table)
                    .col(Reviews::UserId)
                    .col(Reviews::BookId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("reviews_book_idx", Reviews::Table)
                    .col(Reviews::BookId)
                    .col(Reviews::Id)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Ratings::Table)
                    .if_not_exists()
                    .col(id(Ratings::Id))
                    .col(big(Ratings::BookId))
                    .col(big(Ratings::UserId))
                    .col(ColumnDef::new(Ratings::Stars).integer().not_null())
                    .col(big(Ratings::CreatedAt))
                    .col(big(Ratings::UpdatedAt))
                    .foreign_key(&mut fk(
                        "ratings_user_fk",
                        (Ratings::Table, Ratings::UserId),
                        (Users::Table, Users::Id),
                    ))
                    .foreign_key(&mut fk(
                        "ratings_book_fk",
                        (Ratings::Table, Ratings::BookId),
                        (Books::Table, Books::Id),
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                index("ratings_user_book_key", Ratings::Table)
                    .col(Ratings::UserId)
                    .col(Ratings::BookId)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(id(Outbox::Id))
                    .col(string(Outbox::Topic))
                    .col(string(Outbox::RecordKey))
                    .col(text(Outbox::Payload))
                    .col(big(Outbox::CreatedAt))
                    .col(big_null(Outbox::ClaimedUntil))
                    .col(big_null(Outbox::PublishedAt))
                    .to_owned(),
            )
            .await?;
        // A partial index keeps the relay's scan proportional to the backlog, not to
        // everything ever published. Both SQLite and PostgreSQL accept this statement.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL",
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WindowStats::Table)
                    .if_not_exists()
                    .col(big(WindowStats::WindowStart))
                    .col(big(WindowStats::BookId))
                    .col(string(WindowStats::SourceTopic))
                    .col(
                        ColumnDef::new(WindowStats::SourcePartition)
                            .integer()
                            .not_null(),
                    )
                    .col(big(WindowStats::WindowEnd))
                    .col(big(WindowStats::FirstOffset))
                    .col(big(WindowStats::NextOffset))
                    .col(counter(WindowStats::Events))
                    .col(counter(WindowStats::Anonymous))
                    .col(big_null(WindowStats::FirstAt))
                    .col(big_null(WindowStats::LastAt))
                    .col(counter(WindowStats::RevenueCents))
                    .col(ColumnDef::new(WindowStats::Currency).string().null())
                    .col(counter(WindowStats::ReviewsCreated))
                    .col(counter(WindowStats::ReviewsUpdated))
                    .col(counter(WindowStats::ReviewLengthDelta))
                    .col(counter(WindowStats::RatingsCreated))
                    .col(counter(WindowStats::RatingsUpdated))
                    .col(counter(WindowStats::RatingSumDelta))
                    .col(counter(WindowStats::R1))
                    .col(counter(WindowStats::R2))
                    .col(counter(WindowStats::R3))
                    .col(counter(WindowStats::R4))
                    .col(counter(WindowStats::R5))
                    .col(counter(WindowStats::SubmittedRatingSum))
                    .col(ColumnDef::new(WindowStats::UsersSketch).blob().null())
                    .col(big(WindowStats::StoredAt))
                    .primary_key(
                        Index::create()
                            .col(WindowStats::WindowStart)
                            .col(WindowStats::BookId)
                            .col(WindowStats::SourceTopic)
                            .col(WindowStats::SourcePartition)
                            .col(WindowStats::FirstOffset),
                    )
                    .to_owned(),
            )
            .await?;
        // Range queries over all books use the primary key, which leads with window_start;
        // a book's history uses this one.
        manager
            .create_index(
                index("window_stats_book_idx", WindowStats::Table)
                    .col(WindowStats::BookId)
                    .col(WindowStats::WindowStart)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WindowStats::Table.into_iden(),
            Outbox::Table.into_iden(),
            Ratings::Table.into_iden(),
            Reviews::Table.into_iden(),
            Purchases::Table.into_iden(),
            BookFileChunks::Table.into_iden(),
            BookFiles::Table.into_iden(),
            Books::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
