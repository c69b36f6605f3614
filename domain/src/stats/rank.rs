//! How ranked answers are ordered: the popular lists, the genre breakdown, and the
//! overview's most popular book and top genre. Written once here; the memory store sorts
//! with [`compare`], and the SQL store turns [`ORDER`] into its `ORDER BY` and
//! [`qualifies`] into its `HAVING`, so both pick the same entries under a `LIMIT`.

use std::cmp::Ordering;

/// One key of the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The figure ranked by (views, downloads, purchases or revenue).
    Metric,
    /// What the entry is: a book's id, a genre's name (in byte order).
    Identity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Descending,
    Ascending,
}

/// The order of every ranked answer: the highest metric first; ties by identity, lowest
/// first.
pub const ORDER: [(Key, Direction); 2] = [
    (Key::Metric, Direction::Descending),
    (Key::Identity, Direction::Ascending),
];

/// Compares two entries by [`ORDER`]: `Less` means `a` ranks before `b`.
pub fn compare<I: Ord + ?Sized>(a: (i64, &I), b: (i64, &I)) -> Ordering {
    ORDER.iter().fold(Ordering::Equal, |acc, (key, dir)| {
        acc.then_with(|| {
            let o = match key {
                Key::Metric => a.0.cmp(&b.0),
                Key::Identity => a.1.cmp(b.1),
            };
            match dir {
                Direction::Ascending => o,
                Direction::Descending => o.reverse(),
            }
        })
    })
}

/// The overview's top entry needs some of the metric: a book nobody viewed is not the most
/// viewed one.
pub const TOP_MINIMUM: i64 = 1;

pub fn qualifies(metric: i64) -> bool {
    metric >= TOP_MINIMUM
}

/// The first entry by [`ORDER`] among those that [`qualifies`].
pub fn top<T, I: Ord + ?Sized>(
    entries: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> (i64, &I),
) -> Option<T> {
    entries
        .into_iter()
        .filter(|e| qualifies(key(e).0))
        .min_by(|a, b| compare(key(a), key(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_metric_first_then_lowest_identity() {
        assert_eq!(compare((5, &2), (3, &1)), Ordering::Less);
        assert_eq!(compare((5, &2), (5, &1)), Ordering::Greater);
        assert_eq!(compare((5, "b"), (5, "a")), Ordering::Greater);
        assert_eq!(compare((5, &1), (5, &1)), Ordering::Equal);
    }

    #[test]
    fn top_skips_entries_without_the_metric() {
        let rows = [(0i64, 1i64), (4, 9), (4, 3), (2, 0)];
        assert_eq!(top(rows, |r| (r.0, &r.1)), Some((4, 3)));
        assert_eq!(top([(0i64, 1i64)], |r| (r.0, &r.1)), None);
    }
}
