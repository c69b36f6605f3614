//! The catalog: books, their files, and paging.

use chrono::{DateTime, Utc};

use crate::ids::BookId;
use crate::money::{Currency, Money};
use crate::Error;

/// A book as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    pub id: BookId,
    pub title: String,
    pub author: String,
    pub genre: String,
    pub description: String,
    pub price: Money,
    /// The uploaded file, if any.
    pub file: Option<BookFileInfo>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Book {
    pub fn is_free(&self) -> bool {
        self.price.is_zero()
    }
}

/// What is known about a book's file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookFileInfo {
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: i64,
}

/// A validated new book or a full replacement of one (PUT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookDraft {
    pub title: String,
    pub author: String,
    pub genre: String,
    pub description: String,
    pub price: Money,
}

impl BookDraft {
    /// Validates every field and names each one that is wrong.
    pub fn new(
        title: &str,
        author: &str,
        genre: &str,
        description: &str,
        price_cents: i64,
        currency: &str,
        store_currency: Currency,
    ) -> Result<Self, Error> {
        let mut problems = Vec::new();
        let title = required("title", title, 300, &mut problems);
        let author = required("author", author, 200, &mut problems);
        let genre = required("genre", genre, 100, &mut problems);
        let description = description.trim().to_string();
        if description.chars().count() > 10_000 {
            problems.push("description must be at most 10000 characters".to_string());
        }
        if price_cents < 0 {
            problems.push("price_cents must not be negative".to_string());
        } else if price_cents > Money::MAX_PRICE_CENTS {
            problems.push(format!(
                "price_cents must be at most {} (10000000.00)",
                Money::MAX_PRICE_CENTS
            ));
        }
        match Currency::parse(currency) {
            Ok(c) if c != store_currency => problems.push(format!(
                "currency must be the store's currency {store_currency}, got {c}"
            )),
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
        if !problems.is_empty() {
            return Err(Error::Invalid(problems.join("; ")));
        }
        Ok(BookDraft {
            title,
            author,
            genre,
            description,
            price: Money::new(price_cents, store_currency),
        })
    }
}

fn required(field: &str, value: &str, max: usize, problems: &mut Vec<String>) -> String {
    let v = value.trim();
    if v.is_empty() {
        problems.push(format!("{field} must not be empty"));
    } else if v.chars().count() > max {
        problems.push(format!("{field} must be at most {max} characters"));
    }
    v.to_string()
}

/// Which live books a listing returns; every part that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookFilter {
    /// Only books of exactly this genre.
    pub genre: Option<String>,
    /// Only books whose title contains this text, ASCII letters compared without case
    /// (`dune` finds "Dune Messiah").
    pub title: Option<String>,
}

impl BookFilter {
    /// The longest title search accepted, as long as the longest title.
    pub const MAX_TITLE: usize = 300;

    /// A filter from optional query parameters: blank ones are ignored, an overlong
    /// title search is refused.
    pub fn new(genre: Option<&str>, title: Option<&str>) -> Result<Self, Error> {
        let keep = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(String::from);
        let title = keep(title);
        if title
            .as_ref()
            .is_some_and(|t| t.chars().count() > Self::MAX_TITLE)
        {
            return Err(Error::invalid(format!(
                "title must be at most {} characters",
                Self::MAX_TITLE
            )));
        }
        Ok(BookFilter {
            genre: keep(genre),
            title,
        })
    }

    /// Whether `book` passes: the one definition the stores follow.
    pub fn matches(&self, book: &Book) -> bool {
        self.genre.as_ref().is_none_or(|g| book.genre == *g)
            && self.title.as_ref().is_none_or(|t| {
                book.title
                    .to_ascii_lowercase()
                    .contains(&t.to_ascii_lowercase())
            })
    }
}

/// A page request: 1-based page number and page size (1..=100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub per_page: u32,
}

impl PageRequest {
    pub const MAX_PER_PAGE: u32 = 100;

    pub fn new(page: Option<u32>, per_page: Option<u32>) -> Result<Self, Error> {
        let page = page.unwrap_or(1);
        let per_page = per_page.unwrap_or(20);
        if page == 0 {
            return Err(Error::invalid("page starts at 1"));
        }
        if per_page == 0 || per_page > Self::MAX_PER_PAGE {
            return Err(Error::invalid(format!(
                "per_page must be between 1 and {}",
                Self::MAX_PER_PAGE
            )));
        }
        Ok(PageRequest { page, per_page })
    }

    pub fn offset(&self) -> u64 {
        u64::from(self.page - 1) * u64::from(self.per_page)
    }
}

/// One page of results and the total count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u32,
    pub per_page: u32,
    pub total: u64,
}

/// A book file's content, as uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookFileUpload {
    pub file_name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

impl BookFileUpload {
    /// The largest file the bookstore accepts.
    pub const MAX_BYTES: usize = 64 * 1024 * 1024;

    pub fn new(file_name: &str, content_type: &str, bytes: Vec<u8>) -> Result<Self, Error> {
        if bytes.is_empty() {
            return Err(Error::invalid("the file is empty"));
        }
        if bytes.len() > Self::MAX_BYTES {
            return Err(Error::invalid(format!(
                "the file is larger than {} bytes",
                Self::MAX_BYTES
            )));
        }
        let file_name = file_name.trim();
        if !is_safe_file_name(file_name) {
            return Err(Error::invalid(
                "file_name must be 1 to 255 bytes, not `.` or `..`, without control \
                 characters, slashes, backslashes, quotes or bidirectional overrides",
            ));
        }
        let content_type = content_type.trim();
        if !is_media_type(content_type) {
            return Err(Error::invalid(
                "content type must look like type/subtype, at most 100 printable ASCII characters",
            ));
        }
        Ok(BookFileUpload {
            file_name: file_name.to_string(),
            content_type: content_type.to_string(),
            bytes,
        })
    }
}

/// A name a download can carry safely: no control characters (which could split a
/// header or hide part of the name), no path separators (a client saving it must not
/// leave its folder), no quotes (the `filename="..."` parameter), and no bidirectional
/// overrides, which can make `gpj.exe` look like `exe.jpg`.
fn is_safe_file_name(name: &str) -> bool {
    const BIDI: [char; 9] = [
        '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}',
        '\u{2066}', '\u{2069}',
    ];
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.chars().any(|c| {
            c.is_control()
                || matches!(c, '/' | '\\' | '"' | '\u{2067}' | '\u{2068}')
                || BIDI.contains(&c)
        })
}

/// `type/subtype` with optional parameters, in printable ASCII: what a `Content-Type`
/// header can carry back unchanged.
fn is_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    value.len() <= 100
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && essence
            .split_once('/')
            .is_some_and(|(ty, sub)| token(ty) && token(sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").expect("valid")
    }

    #[test]
    fn draft_names_every_problem() {
        let err = BookDraft::new(" ", "", "Fiction", "", -1, "EUR", usd()).expect_err("invalid");
        let msg = err.to_string();
        assert_eq!(
            msg,
            "title must not be empty; author must not be empty; price_cents must not be negative; currency must be the store's currency USD, got EUR"
        );
    }

    #[test]
    fn prices_have_a_maximum() {
        let max = Money::MAX_PRICE_CENTS;
        let ok = BookDraft::new("T", "A", "G", "", max, "USD", usd()).expect("the maximum");
        assert_eq!(ok.price.amount_cents, 1_000_000_000);
        for cents in [max + 1, i64::MAX] {
            let err = BookDraft::new("T", "A", "G", "", cents, "USD", usd()).expect_err("over");
            assert_eq!(
                err.to_string(),
                "price_cents must be at most 1000000000 (10000000.00)"
            );
        }
    }

    #[test]
    fn draft_trims_and_keeps_cents() {
        let d = BookDraft::new(" Dune ", "Herbert", "SF", "", 1999, "USD", usd()).expect("valid");
        assert_eq!(d.title, "Dune");
        assert_eq!(d.price.amount_cents, 1999);
    }

    #[test]
    fn file_names_refuse_control_characters_and_separators() {
        let upload = |name: &str| BookFileUpload::new(name, "text/plain", b"x".to_vec());
        for ok in [
            "dune.epub",
            "Dune – Part 1.pdf",
            "é.txt",
            "a;b.txt",
            ".hidden",
        ] {
            assert_eq!(upload(ok).expect(ok).file_name, ok);
        }
        for bad in [
            "",
            " ",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\"b",
            "a\rb",
            "a\nb",
            "a\0b",
            "a\tb",
            "a\u{7f}b",
            "a\u{85}b",
            "a\u{202e}gpj.exe",
            "a\u{2067}b",
        ] {
            let err = upload(bad).expect_err(bad);
            assert!(
                err.to_string().starts_with("file_name must be"),
                "{bad:?}: {err}"
            );
        }
        assert!(upload(&"a".repeat(256)).is_err());
    }

    #[test]
    fn content_types_must_be_media_types() {
        let upload = |ct: &str| BookFileUpload::new("f", ct, b"x".to_vec());
        for ok in [
            "text/html",
            "text/plain; charset=utf-8",
            "application/epub+zip",
        ] {
            assert!(upload(ok).is_ok(), "{ok}");
        }
        for bad in [
            "html",
            "/x",
            "text/",
            "text/html\r\nX-A: b",
            "t\u{e9}xt/html",
            "a b/c",
        ] {
            assert!(upload(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn page_limits() {
        assert_eq!(
            PageRequest::new(None, None).map(|p| p.offset()).ok(),
            Some(0)
        );
        assert_eq!(
            PageRequest::new(Some(3), Some(10)).map(|p| p.offset()).ok(),
            Some(20)
        );
        assert!(PageRequest::new(Some(0), None).is_err());
        assert!(PageRequest::new(None, Some(101)).is_err());
    }
}
