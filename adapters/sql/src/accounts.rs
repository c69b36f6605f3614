//! `UserRepository`: users and their credentials.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use folio_domain::accounts::{Email, NewUser, Role, User};
use folio_domain::ids::UserId;
use folio_domain::ports::UserRepository;
use folio_domain::{Error, Result};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};

use crate::entity::users;
use crate::error::{corrupt, db_err, unique_as};
use crate::store::SqlStore;
use crate::time::{from_ms, to_ms};

/// The display name of an admin account created at startup.
const ADMIN_DISPLAY_NAME: &str = "Administrator";

fn to_user(m: users::Model) -> Result<User> {
    Ok(User {
        id: UserId(m.id),
        email: Email::parse(&m.email).map_err(|_| corrupt(format!("email of user {}", m.id)))?,
        display_name: m.display_name,
        role: Role::parse(&m.role)
            .ok_or_else(|| corrupt(format!("role {:?} of user {}", m.role, m.id)))?,
        password_hash: m.password_hash,
        created_at: from_ms(m.created_at)?,
    })
}

impl SqlStore {
    async fn user_by_email(&self, email: &Email) -> Result<Option<User>> {
        users::Entity::find()
            .filter(users::Column::Email.eq(email.as_str()))
            .one(&self.db)
            .await
            .map_err(db_err)?
            .map(to_user)
            .transpose()
    }
}

#[async_trait]
impl UserRepository for SqlStore {
    async fn create(&self, user: NewUser, at: DateTime<Utc>) -> Result<User> {
        let row = users::ActiveModel {
            email: Set(user.email.as_str().to_owned()),
            display_name: Set(user.display_name),
            role: Set(user.role.as_str().to_owned()),
            password_hash: Set(user.password_hash),
            created_at: Set(to_ms(at)),
            ..Default::default()
        }
        .insert(&self.db)
        .await
        .map_err(unique_as(format!(
            "email {} is already registered",
            user.email.as_str()
        )))?;
        to_user(row)
    }

    async fn get(&self, id: UserId) -> Result<Option<User>> {
        users::Entity::find_by_id(id.get())
            .one(&self.db)
            .await
            .map_err(db_err)?
            .map(to_user)
            .transpose()
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>> {
        self.user_by_email(email).await
    }

    async fn ensure_admin(
        &self,
        email: &Email,
        password_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<User> {
        // One upsert statement, so two instances starting together cannot both insert.
        let row = users::ActiveModel {
            email: Set(email.as_str().to_owned()),
            display_name: Set(ADMIN_DISPLAY_NAME.to_owned()),
            role: Set(Role::Admin.as_str().to_owned()),
            password_hash: Set(password_hash.to_owned()),
            created_at: Set(to_ms(at)),
            ..Default::default()
        };
        users::Entity::insert(row)
            .on_conflict(
                OnConflict::column(users::Column::Email)
                    .update_columns([users::Column::Role, users::Column::PasswordHash])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await
            .map_err(db_err)?;
        self.user_by_email(email).await?.ok_or_else(|| {
            Error::Internal(format!(
                "admin {} vanished after its upsert",
                email.as_str()
            ))
        })
    }

    async fn count(&self) -> Result<u64> {
        users::Entity::find().count(&self.db).await.map_err(db_err)
    }
}
