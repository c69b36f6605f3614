use sea_orm::entity::prelude::*;

/// One stored aggregate: the complete figures of one (window, book, source partition,
/// first offset).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "window_stats")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub window_start: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub book_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub source_topic: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub source_partition: i32,
    /// Part of the key: a replay of a window starts at the same offset and replaces; a new
    /// stretch of log (a restarted in-process bus) adds.
    #[sea_orm(primary_key, auto_increment = false)]
    pub first_offset: i64,
    pub window_end: i64,
    pub next_offset: i64,
    pub events: i64,
    pub anonymous: i64,
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
    pub revenue_cents: i64,
    pub currency: Option<String>,
    pub reviews_created: i64,
    pub reviews_updated: i64,
    pub review_length_delta: i64,
    pub ratings_created: i64,
    pub ratings_updated: i64,
    pub rating_sum_delta: i64,
    pub r1: i64,
    pub r2: i64,
    pub r3: i64,
    pub r4: i64,
    pub r5: i64,
    pub submitted_rating_sum: i64,
    /// `Sketch::to_bytes` of the users behind the events; NULL when there are none
    /// (anonymous views only), so unique counts skip the row.
    #[sea_orm(column_type = "Blob", nullable)]
    pub users_sketch: Option<Vec<u8>>,
    pub stored_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
