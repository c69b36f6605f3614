use sea_orm::entity::prelude::*;

/// A book's current file. Each upload gets a new id, so a reader streaming an older upload
/// notices the replacement instead of mixing chunks of two files.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "book_files")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(unique)]
    pub book_id: i64,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub chunk_count: i32,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
