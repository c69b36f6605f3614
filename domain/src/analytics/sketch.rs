//! A mergeable distinct-count sketch: exact while small, HyperLogLog beyond.
//!
//! - Up to [`EXACT_LIMIT`] distinct members it keeps their 64-bit hashes, so small counts
//!   are exact. The hash of a user id is a bijection ([`hash_id`]), so two ids never collide.
//! - Past that it is HyperLogLog with 2^15 registers, read with Ertl's improved raw estimator
//!   (`estimate_histogram`): no bias at any count, and a relative standard error of at most
//!   1.04/√32768 ≈ 0.57%, so the 99th percentile of |error| stays under 1.5% at every count
//!   from 1,025 to ten million (measured; figures in `sketch/tests.rs`).
//! - The registers start *sparse*: a sorted list of the registers that are not zero, four
//!   bytes each, until there are more than [`SPARSE_LIMIT`] of them (16 KiB, half the dense
//!   form); then *dense*, one byte per register (32 KiB). Both hold the same registers, so
//!   they give the same estimate. No member costs more than about 9 bytes in any form (see
//!   [`SPARSE_LIMIT`]).
//! - Sketches stored before this form (2^14 registers, 16 KiB) still decode, estimate and
//!   merge: merged with a 2^15 sketch, the result is a 2^14 sketch, exactly the one the old
//!   code would have built from both sets (`fold_registers`).
//! - Merging is a union; it is associative, commutative and idempotent, so figures from
//!   several partitions and windows combine in any order.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Distinct members kept exactly before switching to HyperLogLog.
pub const EXACT_LIMIT: usize = 1024;

/// Index bits: 2^15 registers.
const P: u32 = 15;
const M: usize = 1 << P;
/// Hash bits after the index; ranks run from 1 to `Q + 1`.
const Q: usize = 64 - P as usize;

/// The first stored form's index bits: 2^14 registers, ranks up to 51.
const P14: u32 = 14;
const M14: usize = 1 << P14;
const Q14: usize = 64 - P14 as usize;

/// Most registers the sparse form lists before it turns dense: 4 bytes each, 16 KiB, half
/// the dense form's 32 KiB.
///
/// Why half: a sketch turns dense only with more than this many non-zero registers, so with
/// at least 4,097 members, which puts the dense form at under 8 bytes a member. Below, the
/// sparse form costs at most 4.5 bytes per register (its list grows by an eighth at a
/// time) and the exact form at most 9 bytes per member. So sketches never cost more than
/// about 9 bytes per (sketch, member), plus at most 160 per sketch, however the members
/// spread over windows, books and partitions: ten million events in open windows hold at
/// most ~90 MB of sketches (`memory_stays_bounded`). A
/// quarter (2,048 registers, ~2,100 members) would put a 32 KiB sketch over as few as
/// 2,049 members, 16 bytes each; the old form cost 16 bytes a member at 1,025.
pub const SPARSE_LIMIT: usize = M / 8;

/// Bits of a sparse entry holding the rank, below the register index.
const RANK_BITS: u32 = 6;
const RANK_MASK: u32 = (1 << RANK_BITS) - 1;

/// A distinct-count sketch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sketch {
    /// Sorted, de-duplicated member hashes, at most [`EXACT_LIMIT`].
    Exact(Vec<u64>),
    /// The non-zero registers of 2^15, at most [`SPARSE_LIMIT`], sorted: each entry is the
    /// register index shifted left by 6 bits, or'ed with its value (1 to 50).
    Sparse(Vec<u32>),
    /// 2^15 one-byte registers, more than [`SPARSE_LIMIT`] of them non-zero.
    Dense(Box<[u8]>),
    /// 2^14 one-byte registers: the form stored before 2^15, read from the database and
    /// anything merged with it.
    Dense14(Box<[u8]>),
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::Exact(Vec::new())
    }
}

/// A well-mixed 64-bit hash of an integer id: MurmurHash3's finalizer, a bijection on u64.
pub fn hash_id(id: i64) -> u64 {
    let mut k = id as u64;
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// Stored-form tags. 1 and 2 are the first forms (exact, 2^14 dense); 3 and 4 are 2^15.
const TAG_EXACT: u8 = 1;
const TAG_DENSE14: u8 = 2;
const TAG_SPARSE: u8 = 3;
const TAG_DENSE: u8 = 4;

impl Sketch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        matches!(self, Sketch::Exact(v) if v.is_empty())
    }

    /// Adds a member by its id.
    pub fn insert_id(&mut self, id: i64) {
        self.insert_hash(hash_id(id));
    }

    pub fn insert_hash(&mut self, h: u64) {
        match self {
            Sketch::Exact(v) => {
                let Err(pos) = v.binary_search(&h) else {
                    return;
                };
                if v.len() < EXACT_LIMIT {
                    reserve_step(v, EXACT_LIMIT);
                    v.insert(pos, h);
                } else {
                    *self = Sketch::Sparse(entries_of_hashes(v));
                    self.insert_hash(h);
                }
            }
            Sketch::Sparse(v) => {
                let (idx, rank) = index_and_rank(h, P);
                let key = (idx as u32) << RANK_BITS;
                let pos = v.partition_point(|&e| e < key);
                let entry = key | u32::from(rank);
                if let Some(e) = v.get_mut(pos).filter(|e| **e >> RANK_BITS == idx as u32) {
                    *e = (*e).max(entry);
                } else if v.len() < SPARSE_LIMIT {
                    reserve_step(v, SPARSE_LIMIT);
                    v.insert(pos, entry);
                } else {
                    let mut regs = registers_of_entries(v);
                    raise(&mut regs, idx, rank);
                    *self = Sketch::Dense(regs);
                }
            }
            Sketch::Dense(regs) => {
                let (idx, rank) = index_and_rank(h, P);
                raise(regs, idx, rank);
            }
            Sketch::Dense14(regs) => {
                let (idx, rank) = index_and_rank(h, P14);
                raise(regs, idx, rank);
            }
        }
    }

    /// Adds every member of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        match other {
            Sketch::Exact(hs) => self.merge_hashes(hs),
            Sketch::Sparse(theirs) => match self {
                Sketch::Exact(v) => {
                    let mine = std::mem::take(v);
                    *self = other.clone();
                    self.merge_hashes(&mine);
                }
                Sketch::Sparse(v) => *self = Sketch::of_entries(merge_entries(v, theirs)),
                Sketch::Dense(regs) => set_entries(regs, theirs),
                Sketch::Dense14(regs) => fold_entries(regs, theirs),
            },
            Sketch::Dense(theirs) => match self {
                Sketch::Exact(v) => {
                    let mine = std::mem::take(v);
                    *self = other.clone();
                    self.merge_hashes(&mine);
                }
                Sketch::Sparse(v) => {
                    let mut regs = theirs.clone();
                    set_entries(&mut regs, v);
                    *self = Sketch::Dense(regs);
                }
                Sketch::Dense(regs) => max_into(regs, theirs),
                Sketch::Dense14(regs) => fold_registers(regs, theirs),
            },
            Sketch::Dense14(theirs) => match self {
                Sketch::Exact(v) => {
                    let mine = std::mem::take(v);
                    *self = other.clone();
                    self.merge_hashes(&mine);
                }
                Sketch::Sparse(v) => {
                    let mut regs = theirs.clone();
                    fold_entries(&mut regs, v);
                    *self = Sketch::Dense14(regs);
                }
                Sketch::Dense(mine) => {
                    let mut regs = theirs.clone();
                    fold_registers(&mut regs, mine);
                    *self = Sketch::Dense14(regs);
                }
                Sketch::Dense14(regs) => max_into(regs, theirs),
            },
        }
    }

    fn merge_hashes(&mut self, hs: &[u64]) {
        let Sketch::Exact(v) = self else {
            for &h in hs {
                self.insert_hash(h);
            }
            return;
        };
        if v.is_empty() {
            v.extend_from_slice(hs);
            return;
        }
        let mut merged = Vec::with_capacity(v.len() + hs.len());
        let (mut i, mut j) = (0, 0);
        while i < v.len() && j < hs.len() {
            match v[i].cmp(&hs[j]) {
                std::cmp::Ordering::Less => {
                    merged.push(v[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    merged.push(hs[j]);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    merged.push(v[i]);
                    i += 1;
                    j += 1;
                }
            }
        }
        merged.extend_from_slice(&v[i..]);
        merged.extend_from_slice(&hs[j..]);
        if merged.len() > EXACT_LIMIT {
            *self = Sketch::of_entries(entries_of_hashes(&merged));
        } else {
            trim(&mut merged);
            *v = merged;
        }
    }

    /// The sketch of these sparse entries (sorted, one per register): sparse, or dense if
    /// there are too many.
    fn of_entries(mut entries: Vec<u32>) -> Sketch {
        if entries.len() > SPARSE_LIMIT {
            Sketch::Dense(registers_of_entries(&entries))
        } else {
            trim(&mut entries);
            Sketch::Sparse(entries)
        }
    }

    /// The number of distinct members: exact in the exact form, estimated beyond.
    pub fn estimate(&self) -> u64 {
        let (hist, p) = match self {
            Sketch::Exact(v) => return v.len() as u64,
            Sketch::Sparse(v) => (histogram_of_entries(v), P),
            Sketch::Dense(regs) => (histogram(regs, P), P),
            Sketch::Dense14(regs) => (histogram(regs, P14), P14),
        };
        estimate_histogram(&hist, p).round() as u64
    }

    /// Bytes the sketch occupies in memory, its heap allocation included.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Sketch>()
            + match self {
                Sketch::Exact(v) => v.capacity() * std::mem::size_of::<u64>(),
                Sketch::Sparse(v) => v.capacity() * std::mem::size_of::<u32>(),
                Sketch::Dense(regs) | Sketch::Dense14(regs) => regs.len(),
            }
    }

    /// A compact binary form: a tag byte, then
    /// - 1 (exact): the hashes, 8 bytes little-endian each;
    /// - 2 (2^14 dense, the first form): the 16,384 registers;
    /// - 3 (2^15 sparse): per non-zero register in index order, the index's distance from
    ///   the previous one plus one (from −1 for the first) as a LEB128 varint, then its value
    ///   byte — about 2 bytes a register;
    /// - 4 (2^15 dense): the 32,768 registers.
    ///
    /// Forms 1 and 2 are what the first code wrote, byte for byte.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Sketch::Exact(v) => {
                let mut out = Vec::with_capacity(1 + v.len() * 8);
                out.push(TAG_EXACT);
                for h in v {
                    out.extend_from_slice(&h.to_le_bytes());
                }
                out
            }
            Sketch::Sparse(v) => {
                let mut out = Vec::with_capacity(1 + v.len() * 2 + v.len() / 16);
                out.push(TAG_SPARSE);
                let mut next = 0u32;
                for &e in v {
                    let idx = e >> RANK_BITS;
                    let mut gap = idx - next + 1;
                    while gap >= 0x80 {
                        out.push((gap & 0x7f) as u8 | 0x80);
                        gap >>= 7;
                    }
                    out.push(gap as u8);
                    out.push((e & RANK_MASK) as u8);
                    next = idx + 1;
                }
                out
            }
            Sketch::Dense(regs) | Sketch::Dense14(regs) => {
                let tag = if regs.len() == M {
                    TAG_DENSE
                } else {
                    TAG_DENSE14
                };
                let mut out = Vec::with_capacity(1 + regs.len());
                out.push(tag);
                out.extend_from_slice(regs);
                out
            }
        }
    }

    pub fn from_bytes(b: &[u8]) -> Result<Sketch, String> {
        let malformed = || "sketch bytes are malformed".to_string();
        match b.split_first() {
            None => Ok(Sketch::default()),
            Some((&TAG_EXACT, rest)) if rest.len() % 8 == 0 && rest.len() / 8 <= EXACT_LIMIT => {
                let mut v: Vec<u64> = rest
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect();
                v.sort_unstable();
                v.dedup();
                Ok(Sketch::Exact(v))
            }
            Some((&TAG_DENSE14, rest)) if rest.len() == M14 && ranks_fit(rest, Q14) => {
                Ok(Sketch::Dense14(rest.into()))
            }
            Some((&TAG_DENSE, rest)) if rest.len() == M && ranks_fit(rest, Q) => {
                let nonzero = rest.iter().filter(|&&r| r != 0).count();
                if nonzero > SPARSE_LIMIT {
                    Ok(Sketch::Dense(rest.into()))
                } else {
                    Ok(Sketch::Sparse(entries_of_registers(rest, nonzero)))
                }
            }
            Some((&TAG_SPARSE, rest)) if !rest.is_empty() => {
                let mut entries = Vec::with_capacity(rest.len() / 2);
                let mut next = 0u64;
                let mut bytes = rest.iter();
                while let Some(&first) = bytes.next() {
                    let (mut gap, mut shift, mut byte) = (0u64, 0, first);
                    loop {
                        gap |= u64::from(byte & 0x7f) << shift;
                        if byte & 0x80 == 0 {
                            break;
                        }
                        shift += 7;
                        byte = match bytes.next() {
                            Some(&b) if shift < 21 => b,
                            _ => return Err(malformed()),
                        };
                    }
                    let rank = bytes.next().copied().ok_or_else(malformed)?;
                    let idx = (next + gap).checked_sub(1).ok_or_else(malformed)?;
                    if gap == 0 || idx >= M as u64 || rank == 0 || usize::from(rank) > Q + 1 {
                        return Err(malformed());
                    }
                    entries.push(((idx as u32) << RANK_BITS) | u32::from(rank));
                    next = idx + 1;
                }
                Ok(Sketch::of_entries(entries))
            }
            _ => Err(malformed()),
        }
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.to_bytes())
    }

    pub fn from_base64(s: &str) -> Result<Sketch, String> {
        let bytes = B64
            .decode(s)
            .map_err(|e| format!("sketch is not base64: {e}"))?;
        Sketch::from_bytes(&bytes)
    }
}

/// Grows `v` by an eighth (at least 16, at most to `limit`) when it is full, so its spare
/// capacity stays under an eighth instead of up to a half with `Vec`'s doubling.
fn reserve_step<T>(v: &mut Vec<T>, limit: usize) {
    if v.len() == v.capacity() {
        let step = (v.len() / 8).max(16).min(limit.saturating_sub(v.len()));
        v.reserve_exact(step.max(1));
    }
}

/// Gives back spare capacity beyond an eighth.
fn trim<T>(v: &mut Vec<T>) {
    if v.capacity() > v.len() + v.len() / 8 + 16 {
        v.shrink_to_fit();
    }
}

/// The register a hash lands in and the rank it offers: the top `p` bits, then the leading
/// zeros of the other `64 − p` bits plus one, `65 − p` when they are all zero (the bit
/// `1 << (p − 1)` stops the count there).
fn index_and_rank(h: u64, p: u32) -> (usize, u8) {
    let idx = (h >> (64 - p)) as usize;
    let w = (h << p) | (1 << (p - 1));
    (idx, (w.leading_zeros() + 1) as u8)
}

fn raise(regs: &mut [u8], idx: usize, rank: u8) {
    if regs[idx] < rank {
        regs[idx] = rank;
    }
}

fn max_into(regs: &mut [u8], theirs: &[u8]) {
    for (a, &b) in regs.iter_mut().zip(theirs.iter()) {
        *a = (*a).max(b);
    }
}

fn ranks_fit(regs: &[u8], q: usize) -> bool {
    regs.iter().all(|&r| usize::from(r) <= q + 1)
}

/// The sparse entries of sorted hashes: sorted hashes are in register order, so one pass
/// keeps the highest rank of each register.
fn entries_of_hashes(hs: &[u64]) -> Vec<u32> {
    let mut entries: Vec<u32> = Vec::with_capacity(hs.len() + hs.len() / 8);
    for &h in hs {
        let (idx, rank) = index_and_rank(h, P);
        let e = ((idx as u32) << RANK_BITS) | u32::from(rank);
        match entries.last_mut() {
            Some(last) if *last >> RANK_BITS == idx as u32 => *last = (*last).max(e),
            _ => entries.push(e),
        }
    }
    entries
}

fn entries_of_registers(regs: &[u8], nonzero: usize) -> Vec<u32> {
    let mut entries = Vec::with_capacity(nonzero);
    for (idx, &r) in regs.iter().enumerate() {
        if r != 0 {
            entries.push(((idx as u32) << RANK_BITS) | u32::from(r));
        }
    }
    entries
}

fn registers_of_entries(entries: &[u32]) -> Box<[u8]> {
    let mut regs = vec![0u8; M].into_boxed_slice();
    set_entries(&mut regs, entries);
    regs
}

fn set_entries(regs: &mut [u8], entries: &[u32]) {
    for &e in entries {
        raise(regs, (e >> RANK_BITS) as usize, (e & RANK_MASK) as u8);
    }
}

/// The union of two sparse lists, keeping the higher rank of a register in both.
fn merge_entries(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut merged = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i] >> RANK_BITS, b[j] >> RANK_BITS);
        if x < y {
            merged.push(a[i]);
            i += 1;
        } else if y < x {
            merged.push(b[j]);
            j += 1;
        } else {
            merged.push(a[i].max(b[j]));
            i += 1;
            j += 1;
        }
    }
    merged.extend_from_slice(&a[i..]);
    merged.extend_from_slice(&b[j..]);
    merged
}

/// What a 2^15 register tells about the 2^14 register its hashes land in.
///
/// A hash's 2^14 index is its 2^15 index without the last bit `b`; its 2^14 rank counts
/// from `b` on. If `b` is 1, that rank is 1. If `b` is 0, it is one more than the 2^15 rank
/// (whose bits follow `b`), the all-zero case included: 2^15's cap 50 becomes 2^14's cap 51.
/// A 2^15 register holds the highest rank of its hashes, and this mapping keeps order, so
/// it yields the highest 2^14 rank of the same hashes: folding is exact, not an
/// approximation (`folding_equals_inserting_at_2_14` in the tests).
fn fold_rank(idx15: usize, rank15: u8) -> u8 {
    match rank15 {
        0 => 0,
        _ if idx15 & 1 == 1 => 1,
        r => r.saturating_add(1).min(Q14 as u8 + 1),
    }
}

/// Merges 2^15 registers into 2^14 ones.
fn fold_registers(regs14: &mut [u8], regs15: &[u8]) {
    for (j, r) in regs14.iter_mut().enumerate() {
        let folded = fold_rank(2 * j, regs15[2 * j]).max(fold_rank(2 * j + 1, regs15[2 * j + 1]));
        *r = (*r).max(folded);
    }
}

/// Merges 2^15 sparse entries into 2^14 registers.
fn fold_entries(regs14: &mut [u8], entries: &[u32]) {
    for &e in entries {
        let idx15 = (e >> RANK_BITS) as usize;
        raise(regs14, idx15 >> 1, fold_rank(idx15, (e & RANK_MASK) as u8));
    }
}

/// Register histograms: `hist[k]` registers hold `k`, for `k` up to `65 − p`.
const HIST: usize = Q14 + 2;

/// How many of `regs` (of 2^`p`) hold each value.
fn histogram(regs: &[u8], p: u32) -> [u32; HIST] {
    let cap = 65 - p as usize;
    let mut hist = [0u32; HIST];
    for &r in regs {
        hist[usize::from(r).min(cap)] += 1;
    }
    hist
}

/// The same for sparse entries: registers not listed hold 0.
fn histogram_of_entries(entries: &[u32]) -> [u32; HIST] {
    let mut hist = [0u32; HIST];
    hist[0] = (M - entries.len()) as u32;
    for &e in entries {
        hist[((e & RANK_MASK) as usize).min(Q + 1)] += 1;
    }
    hist
}

/// Ertl's improved raw estimator (O. Ertl, "New cardinality estimation algorithms for
/// HyperLogLog sketches", 2017), for `m = 2^p` registers and `q = 64 − p`:
///
/// `n̂ = α∞·m² / (m·σ(C₀/m) + Σ_{k=1..q} C_k·2^-k + m·τ(1 − C_{q+1}/m)·2^-q)`,
/// with `α∞ = 1/(2·ln 2)` and `C_k` the number of registers holding `k`.
///
/// Where plain HyperLogLog adds `2^-0 = 1` for an empty register, σ adds what such a
/// register is expected to contribute given how many are empty, and τ does the same for
/// registers stuck at the cap. That removes the bias for small counts without switching to
/// linear counting, so there is no hand-over point and no empirical correction table. Its
/// bias, measured from 1,025 to 10,000,000 members, stays within ±0.05%.
fn estimate_histogram(hist: &[u32; HIST], p: u32) -> f64 {
    let m_registers = 1usize << p;
    let q = 64 - p as usize;
    let m = m_registers as f64;
    let empty = f64::from(hist[0]);
    if hist[0] as usize == m_registers {
        return 0.0;
    }
    let mut sum = m * tau(1.0 - f64::from(hist[q + 1]) / m);
    for &c in hist[1..=q].iter().rev() {
        sum = 0.5 * (sum + f64::from(c));
    }
    sum += m * sigma(empty / m);
    let alpha_inf = 0.5 / std::f64::consts::LN_2;
    alpha_inf * m * m / sum
}

/// `σ(x) = x + Σ_{k≥1} x^(2^k)·2^(k−1)`, for `0 ≤ x < 1`.
fn sigma(x: f64) -> f64 {
    if x >= 1.0 {
        return f64::INFINITY;
    }
    let (mut power, mut weight, mut sum) = (x, 1.0, x);
    loop {
        power *= power;
        let before = sum;
        sum += power * weight;
        weight += weight;
        if sum == before {
            return sum;
        }
    }
}

/// `τ(x) = (1 − x − Σ_{k≥1} (1 − x^(2^−k))²·2^−k) / 3`, for `0 ≤ x ≤ 1`.
fn tau(x: f64) -> f64 {
    if x <= 0.0 || x >= 1.0 {
        return 0.0;
    }
    let (mut root, mut weight, mut sum) = (x, 1.0, 1.0 - x);
    loop {
        root = root.sqrt();
        weight *= 0.5;
        let before = sum;
        sum -= (1.0 - root) * (1.0 - root) * weight;
        if sum == before {
            return sum / 3.0;
        }
    }
}

impl serde::Serialize for Sketch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for Sketch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Sketch::from_base64(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
