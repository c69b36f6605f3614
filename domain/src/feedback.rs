//! Reviews and ratings.

use chrono::{DateTime, Utc};

use crate::ids::{BookId, ReviewId, UserId};
use crate::Error;

/// One user's review of one book. There is at most one per (user, book).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    pub id: ReviewId,
    pub book_id: BookId,
    pub user_id: UserId,
    pub text: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A review text: 1 to 5000 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewText(String);

impl ReviewText {
    pub const MAX_CHARS: usize = 5000;

    pub fn parse(raw: &str) -> Result<Self, Error> {
        let t = raw.trim();
        let n = t.chars().count();
        if n == 0 {
            return Err(Error::invalid("review text must not be empty"));
        }
        if n > Self::MAX_CHARS {
            return Err(Error::invalid(format!(
                "review text must be at most {} characters",
                Self::MAX_CHARS
            )));
        }
        Ok(ReviewText(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length in Unicode scalar values, as events carry it.
    pub fn length(&self) -> u32 {
        self.0.chars().count() as u32
    }
}

/// A rating value, 1 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Stars(u8);

impl Stars {
    pub fn parse(raw: i64) -> Result<Self, Error> {
        if (1..=5).contains(&raw) {
            Ok(Stars(raw as u8))
        } else {
            Err(Error::invalid(format!(
                "rating must be between 1 and 5, got {raw}"
            )))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// One user's rating of one book. There is at most one per (user, book).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rating {
    pub book_id: BookId,
    pub user_id: UserId,
    pub stars: Stars,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The result of updating a rating: the new row and the value it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RatingUpdate {
    pub rating: Rating,
    pub old: Stars,
}

/// The result of updating a review: the new row and the length of the text it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewUpdate {
    pub review: Review,
    pub old_length: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_text_rules() {
        assert!(Stars::parse(0).is_err());
        assert!(Stars::parse(6).is_err());
        assert_eq!(Stars::parse(5).map(Stars::get).ok(), Some(5));
        assert!(ReviewText::parse("   ").is_err());
        assert_eq!(
            ReviewText::parse(" héllo ").map(|t| t.length()).ok(),
            Some(5)
        );
    }
}
