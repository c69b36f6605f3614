//! The topic catalog of docs/contract.md §1: every topic folio uses, with its partition count and what
//! its records are keyed by. Nothing else in folio spells a topic name.

use std::fmt;

/// One of folio's topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    BookViews,
    BookDownloads,
    BookPurchases,
    BookReviews,
    BookRatings,
    AggregatedStats,
    DeadLetters,
}

/// What a topic's record key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedBy {
    Book,
    User,
    /// Aggregates are keyed by book so the topic spreads (the original keyed by type).
    AggregateBook,
    /// Dead letters are keyed by the topic they came from.
    SourceTopic,
}

impl Topic {
    /// Every topic, in catalog order.
    pub const ALL: [Topic; 7] = [
        Topic::BookViews,
        Topic::BookDownloads,
        Topic::BookPurchases,
        Topic::BookReviews,
        Topic::BookRatings,
        Topic::AggregatedStats,
        Topic::DeadLetters,
    ];

    /// The five topics of user-action events, which the analytics service consumes.
    pub const EVENTS: [Topic; 5] = [
        Topic::BookViews,
        Topic::BookDownloads,
        Topic::BookPurchases,
        Topic::BookReviews,
        Topic::BookRatings,
    ];

    /// The topic name on the broker.
    pub const fn name(self) -> &'static str {
        match self {
            Topic::BookViews => "book.views",
            Topic::BookDownloads => "book.downloads",
            Topic::BookPurchases => "book.purchases",
            Topic::BookReviews => "book.reviews",
            Topic::BookRatings => "book.ratings",
            Topic::AggregatedStats => "analytics.aggregated-stats",
            Topic::DeadLetters => "analytics.dlq",
        }
    }

    /// The partition count a new topic is created with.
    pub const fn partitions(self) -> i32 {
        match self {
            Topic::BookViews | Topic::BookDownloads => 3,
            Topic::BookPurchases | Topic::BookReviews | Topic::BookRatings => 2,
            Topic::AggregatedStats => 2,
            Topic::DeadLetters => 1,
        }
    }

    pub const fn keyed_by(self) -> KeyedBy {
        match self {
            Topic::BookViews | Topic::BookReviews | Topic::BookRatings => KeyedBy::Book,
            Topic::BookDownloads | Topic::BookPurchases => KeyedBy::User,
            Topic::AggregatedStats => KeyedBy::AggregateBook,
            Topic::DeadLetters => KeyedBy::SourceTopic,
        }
    }

    /// Looks a topic up by its broker name.
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One partition of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Topic,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: Topic, partition: i32) -> Self {
        TopicPartition { topic, partition }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_matches_the_design() {
        let got: Vec<(&str, i32)> = Topic::ALL
            .iter()
            .map(|t| (t.name(), t.partitions()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("book.views", 3),
                ("book.downloads", 3),
                ("book.purchases", 2),
                ("book.reviews", 2),
                ("book.ratings", 2),
                ("analytics.aggregated-stats", 2),
                ("analytics.dlq", 1),
            ]
        );
        assert_eq!(Topic::from_name("book.ratings"), Some(Topic::BookRatings));
        assert_eq!(Topic::from_name("book.rating"), None);
    }
}
