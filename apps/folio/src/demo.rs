//! Demo material shared by `folio seed` and `folio loadgen`: public-domain books, and how
//! readers spread their attention (a few books get most of it).

use rand::Rng;

/// A book of the demo catalog.
#[derive(Debug, Clone, Copy)]
pub struct DemoBook {
    pub title: &'static str,
    pub author: &'static str,
    pub genre: &'static str,
    /// 0: free.
    pub price_cents: i64,
}

const fn book(
    title: &'static str,
    author: &'static str,
    genre: &'static str,
    price_cents: i64,
) -> DemoBook {
    DemoBook {
        title,
        author,
        genre,
        price_cents,
    }
}

/// Thirty public-domain books in six genres; a few are free.
pub const BOOKS: &[DemoBook] = &[
    book("Pride and Prejudice", "Jane Austen", "Classics", 499),
    book("Moby-Dick", "Herman Melville", "Classics", 599),
    book("Middlemarch", "George Eliot", "Classics", 699),
    book("Great Expectations", "Charles Dickens", "Classics", 0),
    book("Anna Karenina", "Leo Tolstoy", "Classics", 799),
    book("The Time Machine", "H. G. Wells", "Science Fiction", 399),
    book(
        "The War of the Worlds",
        "H. G. Wells",
        "Science Fiction",
        449,
    ),
    book("Frankenstein", "Mary Shelley", "Science Fiction", 0),
    book(
        "Twenty Thousand Leagues Under the Seas",
        "Jules Verne",
        "Science Fiction",
        549,
    ),
    book(
        "A Princess of Mars",
        "Edgar Rice Burroughs",
        "Science Fiction",
        299,
    ),
    book(
        "The Hound of the Baskervilles",
        "Arthur Conan Doyle",
        "Mystery",
        399,
    ),
    book("The Moonstone", "Wilkie Collins", "Mystery", 499),
    book(
        "The Mysterious Affair at Styles",
        "Agatha Christie",
        "Mystery",
        599,
    ),
    book("The Woman in White", "Wilkie Collins", "Mystery", 0),
    book("The Secret Adversary", "Agatha Christie", "Mystery", 449),
    book("Leaves of Grass", "Walt Whitman", "Poetry", 299),
    book("The Raven and Other Poems", "Edgar Allan Poe", "Poetry", 0),
    book(
        "Songs of Innocence and of Experience",
        "William Blake",
        "Poetry",
        249,
    ),
    book("Sonnets", "William Shakespeare", "Poetry", 199),
    book("Dracula", "Bram Stoker", "Horror", 499),
    book(
        "The Strange Case of Dr Jekyll and Mr Hyde",
        "Robert Louis Stevenson",
        "Horror",
        349,
    ),
    book("The Turn of the Screw", "Henry James", "Horror", 299),
    book("Carmilla", "Sheridan Le Fanu", "Horror", 0),
    book("The Picture of Dorian Gray", "Oscar Wilde", "Horror", 449),
    book(
        "Treasure Island",
        "Robert Louis Stevenson",
        "Adventure",
        399,
    ),
    book(
        "The Count of Monte Cristo",
        "Alexandre Dumas",
        "Adventure",
        899,
    ),
    book("The Call of the Wild", "Jack London", "Adventure", 299),
    book("Robinson Crusoe", "Daniel Defoe", "Adventure", 349),
    book(
        "Around the World in Eighty Days",
        "Jules Verne",
        "Adventure",
        399,
    ),
    book("Kidnapped", "Robert Louis Stevenson", "Adventure", 0),
];

/// Review texts readers leave.
pub const REVIEWS: &[&str] = &[
    "A classic for a reason.",
    "Slow start, wonderful second half.",
    "I could not put it down.",
    "Beautifully written, if a little long.",
    "Not for me, but I see why people love it.",
    "Read it twice. Will read it again.",
];

/// An index into `n` items where item `i` is picked with weight 1 / (i + 1): a few
/// favourites and a long tail, as real catalogs see.
pub fn popular_index(rng: &mut impl Rng, n: usize) -> usize {
    let total: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
    let mut x = rng.gen::<f64>() * total;
    for i in 0..n {
        x -= 1.0 / (i + 1) as f64;
        if x <= 0.0 {
            return i;
        }
    }
    n.saturating_sub(1)
}

/// What a simulated visitor does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ViewSignedIn,
    ViewAnonymous,
    Download,
    Purchase,
    Review,
    Rate,
}

impl Action {
    /// The realistic mix: mostly browsing, some buying and reading, a little feedback.
    pub fn pick(rng: &mut impl Rng) -> Action {
        match rng.gen_range(0..100) {
            0..45 => Action::ViewSignedIn,
            45..70 => Action::ViewAnonymous,
            70..80 => Action::Download,
            80..88 => Action::Purchase,
            88..92 => Action::Review,
            _ => Action::Rate,
        }
    }
}
