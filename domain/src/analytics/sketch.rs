//! A mergeable distinct-count sketch: exact while small, HyperLogLog beyond.
//!
//! - Up to [`EXACT_LIMIT`] distinct members it keeps their 64-bit hashes, so small counts
//!   are exact. The hash of a user id is a bijection ([`hash_id`]), so two ids never collide.
//! - Past that it switches to HyperLogLog with 2^14 one-byte registers (16 KiB), read with
//!   Ertl's improved raw estimator (`estimate_histogram`): no bias at any count, and a
//!   relative standard error of at most 1.04/√16384 ≈ 0.81%. At every count about 98.5% of
//!   estimates or more are within 2%; the 99th percentile of |error| tends to 2.1%, the limit of
//!   2^14 registers (figures in `sketch/tests.rs`).
//! - Merging is a union; it is associative, commutative and idempotent, so figures from
//!   several partitions and windows combine in any order.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

/// Distinct members kept exactly before switching to HyperLogLog.
pub const EXACT_LIMIT: usize = 1024;
const P: u32 = 14;
const M: usize = 1 << P;

/// A distinct-count sketch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sketch {
    /// Sorted, de-duplicated member hashes.
    Exact(Vec<u64>),
    /// HyperLogLog registers.
    Dense(Box<[u8]>),
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
                if let Err(pos) = v.binary_search(&h) {
                    v.insert(pos, h);
                    if v.len() > EXACT_LIMIT {
                        self.densify();
                    }
                }
            }
            Sketch::Dense(regs) => add_to_registers(regs, h),
        }
    }

    fn densify(&mut self) {
        if let Sketch::Exact(v) = self {
            let mut regs = vec![0u8; M].into_boxed_slice();
            for &h in v.iter() {
                add_to_registers(&mut regs, h);
            }
            *self = Sketch::Dense(regs);
        }
    }

    /// Adds every member of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        match other {
            Sketch::Exact(hs) => {
                if let Sketch::Exact(v) = self {
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
                    *v = merged;
                    if v.len() > EXACT_LIMIT {
                        self.densify();
                    }
                } else {
                    for &h in hs {
                        self.insert_hash(h);
                    }
                }
            }
            Sketch::Dense(theirs) => {
                self.densify();
                if let Sketch::Dense(regs) = self {
                    for (a, b) in regs.iter_mut().zip(theirs.iter()) {
                        *a = (*a).max(*b);
                    }
                }
            }
        }
    }

    /// The number of distinct members: exact in the exact form, estimated beyond.
    pub fn estimate(&self) -> u64 {
        match self {
            Sketch::Exact(v) => v.len() as u64,
            Sketch::Dense(regs) => estimate_registers(regs),
        }
    }

    /// A compact binary form: a tag byte, then the hashes (little-endian) or the registers.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Sketch::Exact(v) => {
                let mut out = Vec::with_capacity(1 + v.len() * 8);
                out.push(1);
                for h in v {
                    out.extend_from_slice(&h.to_le_bytes());
                }
                out
            }
            Sketch::Dense(regs) => {
                let mut out = Vec::with_capacity(1 + M);
                out.push(2);
                out.extend_from_slice(regs);
                out
            }
        }
    }

    pub fn from_bytes(b: &[u8]) -> Result<Sketch, String> {
        match b.split_first() {
            None => Ok(Sketch::default()),
            Some((1, rest)) if rest.len() % 8 == 0 && rest.len() / 8 <= EXACT_LIMIT => {
                let mut v: Vec<u64> = rest
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect();
                v.sort_unstable();
                v.dedup();
                Ok(Sketch::Exact(v))
            }
            Some((2, rest)) if rest.len() == M && rest.iter().all(|&r| r <= 64 - P as u8 + 1) => {
                Ok(Sketch::Dense(rest.to_vec().into_boxed_slice()))
            }
            _ => Err("sketch bytes are malformed".into()),
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

fn add_to_registers(regs: &mut [u8], h: u64) {
    let idx = (h >> (64 - P)) as usize;
    let w = (h << P) | (1 << (P - 1));
    let rank = (w.leading_zeros() + 1) as u8;
    if regs[idx] < rank {
        regs[idx] = rank;
    }
}

/// Largest rank a register can hold: the 64 − P bits after the index, all zero, give
/// `Q + 1` (the sentinel bit `1 << (P - 1)` in [`add_to_registers`] caps the count there).
const Q: usize = 64 - P as usize;

/// How many registers hold each value `0..=Q + 1`.
fn histogram(regs: &[u8]) -> [u32; Q + 2] {
    let mut hist = [0u32; Q + 2];
    for &r in regs {
        hist[usize::from(r).min(Q + 1)] += 1;
    }
    hist
}

fn estimate_registers(regs: &[u8]) -> u64 {
    estimate_histogram(&histogram(regs)).round() as u64
}

/// Ertl's improved raw estimator (O. Ertl, "New cardinality estimation algorithms for
/// HyperLogLog sketches", 2017):
///
/// `n̂ = α∞·m² / (m·σ(C₀/m) + Σ_{k=1..q} C_k·2^-k + m·τ(1 − C_{q+1}/m)·2^-q)`,
/// with `α∞ = 1/(2·ln 2)` and `C_k` the number of registers holding `k`.
///
/// Where plain HyperLogLog adds `2^-0 = 1` for an empty register, σ adds what such a
/// register is expected to contribute given how many are empty, and τ does the same for
/// registers stuck at the cap. That removes the bias for small counts without switching to
/// linear counting, so there is no hand-over point and no empirical correction table. Its
/// bias, measured from 1,025 to 10,000,000 members, stays within ±0.05%.
fn estimate_histogram(hist: &[u32; Q + 2]) -> f64 {
    let m = M as f64;
    let empty = f64::from(hist[0]);
    if hist[0] as usize == M {
        return 0.0;
    }
    let mut sum = m * tau(1.0 - f64::from(hist[Q + 1]) / m);
    for &c in hist[1..=Q].iter().rev() {
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
