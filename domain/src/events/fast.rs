//! The common case of [`Event::decode`], read without serde: a flat JSON object of the
//! fields of a view, a download, a review or a rating, strings without escapes and plain
//! integers, as folio (and any ordinary producer) writes them.
//!
//! It answers only what it is sure of: every record it reads is one serde reads to the
//! same [`Wire`]. Anything else (an escape, a float, a nested value, an unknown or repeated
//! field, a purchase's price, a value that does not parse) makes it give up, `None`, and
//! the record goes through serde, which then also words any error. The rule is checked by
//! a test that feeds both readers the same altered records.

use chrono::{DateTime, NaiveDate, Utc};

use super::{rfc3339, Kind, Wire};
use crate::ids::{BookId, EventId, ReviewId, UserId};

/// The fields this reader knows, one bit each (to refuse a repeated one, as serde does).
const TYPE: u16 = 1;
const EVENT_ID: u16 = 1 << 1;
const OCCURRED_AT: u16 = 1 << 2;
const BOOK_ID: u16 = 1 << 3;
const USER_ID: u16 = 1 << 4;
const REVIEW_ID: u16 = 1 << 5;
const LENGTH: u16 = 1 << 6;
const OLD_LENGTH: u16 = 1 << 7;
const RATING: u16 = 1 << 8;
const OLD_RATING: u16 = 1 << 9;

/// A value this reader takes: a string without escapes, an integer, or null.
enum Value<'a> {
    Str(&'a [u8]),
    Int(i64),
    Null,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        self.skip_ws();
        (self.b.get(self.at) == Some(&c)).then(|| self.at += 1)
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.b.get(self.at).copied()
    }

    /// A string without escapes (the opening quote next), as its bytes, unchecked: each
    /// value read from one is then parsed strictly (a known name, a UUID, an instant),
    /// which a control character or a byte outside ASCII fails, leaving it to serde.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let rest = &self.b[self.at..];
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        (rest[end] == b'"').then(|| {
            self.at += end + 1;
            &rest[..end]
        })
    }

    /// `-?[0-9]+` as JSON writes it (no leading zero), at most 18 digits: always an i64.
    fn int(&mut self) -> Option<i64> {
        let negative = self.b.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let start = self.at;
        let mut v: i64 = 0;
        while let Some(d @ b'0'..=b'9') = self.b.get(self.at) {
            if self.at - start == 18 {
                return None;
            }
            v = v * 10 + i64::from(d - b'0');
            self.at += 1;
        }
        let digits = self.at - start;
        // serde_json reads `-0` as a float, and a leading zero not at all.
        let zero_first = self.b.get(start) == Some(&b'0');
        if digits == 0 || (zero_first && (digits > 1 || negative)) {
            return None;
        }
        // A fraction or an exponent makes it a float, which no field here takes.
        if let Some(b'.' | b'e' | b'E') = self.b.get(self.at) {
            return None;
        }
        Some(if negative { -v } else { v })
    }

    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Value::Str),
            b'-' | b'0'..=b'9' => self.int().map(Value::Int),
            b'n' => {
                let null = self.b.get(self.at..self.at + 4)? == b"null";
                null.then(|| {
                    self.at += 4;
                    Value::Null
                })
            }
            _ => None,
        }
    }
}

fn int<T: TryFrom<i64>>(v: Value<'_>) -> Option<T> {
    match v {
        Value::Int(i) => T::try_from(i).ok(),
        _ => None,
    }
}

/// An optional field: null is none, as serde reads an `Option`.
fn opt<T: TryFrom<i64>>(v: Value<'_>) -> Option<Option<T>> {
    match v {
        Value::Null => Some(None),
        v => int(v).map(Some),
    }
}

fn text(v: Value<'_>) -> Option<&[u8]> {
    match v {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

fn kind(s: &[u8]) -> Option<Kind> {
    Some(match s {
        b"book_viewed" => Kind::Viewed,
        b"book_downloaded" => Kind::Downloaded,
        b"book_reviewed" => Kind::Reviewed,
        b"book_rated" => Kind::Rated,
        _ => return None,
    })
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the form folio writes, without chrono's general parser;
/// any other form goes to [`rfc3339`], as serde's reading does.
fn instant(b: &[u8]) -> Option<DateTime<Utc>> {
    let other = || rfc3339::parse(std::str::from_utf8(b).ok()?).ok();
    let canonical = b.len() == 24
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[23] == b'Z';
    if !canonical {
        return other();
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0, 4)? as i32, num(5, 7)?, num(8, 10)?)?;
    // chrono reads a leap second (:60) too; that rare form takes its reader.
    let second = num(17, 19)?;
    if second > 59 {
        return other();
    }
    let time = date.and_hms_milli_opt(num(11, 13)?, num(14, 16)?, second, num(20, 23)?)?;
    Some(time.and_utc())
}

/// The record as [`Wire`], or `None` to leave it to serde.
pub(super) fn read(bytes: &[u8]) -> Option<Wire> {
    let mut r = Reader { b: bytes, at: 0 };
    r.eat(b'{')?;
    let mut seen = 0u16;
    let (mut kind_, mut event_id, mut occurred_at, mut book_id) = (None, None, None, None);
    let mut w = Wire {
        kind: Kind::Viewed,
        event_id: EventId(uuid::Uuid::nil()),
        occurred_at: DateTime::<Utc>::MIN_UTC,
        book_id: BookId(0),
        user_id: None,
        purchase_id: None,
        price: None,
        review_id: None,
        length: None,
        old_length: None,
        rating: None,
        old_rating: None,
    };
    if r.peek()? != b'}' {
        loop {
            let key = r.string()?;
            r.eat(b':')?;
            let v = r.value()?;
            let bit = match key {
                b"type" => {
                    kind_ = Some(kind(text(v)?)?);
                    TYPE
                }
                b"event_id" => {
                    event_id = Some(EventId(uuid::Uuid::try_parse_ascii(text(v)?).ok()?));
                    EVENT_ID
                }
                b"occurred_at" => {
                    occurred_at = Some(instant(text(v)?)?);
                    OCCURRED_AT
                }
                b"book_id" => {
                    book_id = Some(BookId(int(v)?));
                    BOOK_ID
                }
                b"user_id" => {
                    w.user_id = opt(v)?.map(UserId);
                    USER_ID
                }
                b"review_id" => {
                    w.review_id = opt(v)?.map(ReviewId);
                    REVIEW_ID
                }
                b"length" => {
                    w.length = opt(v)?;
                    LENGTH
                }
                b"old_length" => {
                    w.old_length = opt(v)?;
                    OLD_LENGTH
                }
                b"rating" => {
                    w.rating = opt(v)?;
                    RATING
                }
                b"old_rating" => {
                    w.old_rating = opt(v)?;
                    OLD_RATING
                }
                _ => return None,
            };
            if seen & bit != 0 {
                return None;
            }
            seen |= bit;
            match r.peek()? {
                b',' => r.at += 1,
                b'}' => break,
                _ => return None,
            }
        }
    }
    r.eat(b'}')?;
    r.skip_ws();
    if r.at != bytes.len() {
        return None;
    }
    w.kind = kind_?;
    w.event_id = event_id?;
    w.occurred_at = occurred_at?;
    w.book_id = book_id?;
    Some(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;

    fn serde_reads(bytes: &[u8]) -> Option<Event> {
        serde_json::from_slice::<Event>(bytes).ok()
    }

    fn fast_reads(bytes: &[u8]) -> Option<Event> {
        read(bytes).and_then(|w| w.into_event().ok())
    }

    /// Records of every type this reader takes, as folio writes them.
    fn written() -> Vec<String> {
        crate::events::samples()
            .iter()
            .filter(|e| !matches!(e, Event::BookPurchased { .. }))
            .map(|e| String::from_utf8(e.encode()).expect("utf8"))
            .collect()
    }

    /// Other forms of `json`: spaced, reordered, with odd values put in.
    fn altered(json: &str) -> Vec<String> {
        let mut out = vec![
            json.replace(':', " : ").replace(',', "\n,\t"),
            format!(" \r\n{json}\n "),
            json.replacen('{', r#"{"source":"web","#, 1),
            json.replacen('{', r#"{"source":{"a":1},"#, 1),
            json.replacen('{', r#"{"book_id":7,"#, 1),
            json.replacen('{', r#"{"user_id":null,"#, 1),
            json.replacen('{', r#"{"old_rating":2,"#, 1),
            json.replacen('{', r#"{"rating":"4","#, 1),
            json.replacen('{', r#"{"rating":4.0,"#, 1),
            json.replacen('{', r#"{"length":-1,"#, 1),
            json.replacen('{', r#"{"length":1e2,"#, 1),
            json.replacen('{', r#"{"old_length":4294967296,"#, 1),
            json.replacen('{', r#"{"old_rating":256,"#, 1),
            json.replacen('{', r#"{"purchase_id":3,"#, 1),
            json.replace("\"book_id\":5", "\"book_id\":05"),
            json.replace("\"book_id\":5", "\"book_id\":-0"),
            json.replace("\"book_id\":5", "\"book_id\":-5"),
            json.replace("\"book_id\":5", "\"book_id\":12345678901234567890"),
            json.replace("\"book_id\":5", "\"book_id\":null"),
            json.replace("\"book_id\":5", "\"book_id\":\"5\""),
            json.replace("\"type\":\"", "\"typ\\u0065\":\""),
            json.replace("book_", "book\\u005f"),
            json.replace(".250Z", ".250+01:00"),
            json.replace(".250Z", ".250z"),
            json.replace(".250Z", "Z"),
            json.replace("12:00:30.250Z", "23:59:60.250Z"),
            json.replace("2026-03-01", "2026-02-30"),
            json.replace("2026-03-01T12", "2026-03-01T24"),
            json.replace("2026-03-01", "0000-03-01"),
            json.replace('-', "\u{e9}"),
            json.replace("_viewed", "_viewed\u{1}")
                .replace("_rated", "\u{7f}_rated"),
            json.replace(".250Z", ".250Z\u{1}"),
            json.replace("2026", "\u{1}2026"),
            format!("{json}x"),
            format!("{json}{{}}"),
            json.replacen('}', ",}", 1),
            json.replacen(',', ",,", 1),
        ];
        // The event id in the other forms uuid reads, and broken.
        if let Some(start) = json.find("\"event_id\":\"") {
            let id = &json[start + 12..start + 48];
            out.push(json.replace(id, &id.replace('-', "")));
            out.push(json.replace(id, &format!("{{{id}}}")));
            out.push(json.replace(id, &id.to_uppercase()));
            out.push(json.replace(id, &id[1..]));
        }
        // Every prefix: a record cut off anywhere.
        out.extend((0..json.len()).map(|n| json[..n].to_string()));
        out
    }

    #[test]
    fn reads_what_folio_writes() {
        for json in written() {
            let fast = fast_reads(json.as_bytes());
            assert!(
                fast.is_some(),
                "the common form is read without serde: {json}"
            );
            assert_eq!(fast, serde_reads(json.as_bytes()), "{json}");
        }
    }

    #[test]
    fn whatever_it_reads_serde_reads_the_same() {
        let mut taken = 0;
        let mut tried = 0;
        for json in written() {
            for other in altered(&json) {
                tried += 1;
                if let Some(fast) = fast_reads(other.as_bytes()) {
                    taken += 1;
                    assert_eq!(Some(fast), serde_reads(other.as_bytes()), "{other}");
                }
            }
        }
        // Both sides are exercised: some forms taken here, most left to serde.
        assert!(taken >= 30 && taken < tried / 2, "{taken} of {tried}");
    }
}
