use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The topic and record key the event will be published with, kept for operators.
    pub topic: String,
    pub record_key: String,
    /// The event's JSON, exactly as it goes on the bus.
    #[sea_orm(column_type = "Text")]
    pub payload: String,
    pub created_at: i64,
    /// While in the future, a relay holds the entry and no other relay may claim it.
    pub claimed_until: Option<i64>,
    pub published_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
