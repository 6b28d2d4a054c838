//! Compact id storage for the diff: ids are kept as bytes back to back (no allocation per
//! id) and spread over hash partitions, so that the diff can work one small partition at a
//! time (small hash tables that stay in cache) and on several threads.

/// Number of hash partitions (a power of two).
pub const PARTITIONS: usize = 64;
const PARTITION_SHIFT: u32 = 64 - PARTITIONS.trailing_zeros();

/// The hash every id gets: the same for equal ids on both sides of a diff.
#[derive(Clone)]
pub struct IdHasher(ahash::RandomState);

impl Default for IdHasher {
    fn default() -> Self {
        // Fixed seeds: partitions (and so the order of the output lists) are reproducible.
        IdHasher(ahash::RandomState::with_seeds(
            0x243f_6a88_85a3_08d3,
            0x1319_8a2e_0370_7344,
            0xa409_3822_299f_31d0,
            0x082e_fa98_ec4e_6c89,
        ))
    }
}

impl IdHasher {
    #[inline]
    pub fn hash(&self, id: &[u8]) -> u64 {
        self.0.hash_one(id)
    }
}

/// An ordered list of ids stored back to back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdList {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl IdList {
    pub fn new() -> Self {
        IdList::default()
    }

    #[inline]
    pub fn push(&mut self, id: &[u8]) {
        self.bytes.extend_from_slice(id);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes used by the ids themselves.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// The id as text (ids are checked to be UTF-8 when collected).
    pub fn get_str(&self, i: usize) -> &str {
        std::str::from_utf8(self.get(i)).unwrap_or("\u{fffd}")
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    pub fn iter_str(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(move |i| self.get_str(i))
    }

    /// Ids `range` as owned strings (one membership/upload chunk).
    pub fn strings(&self, range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| self.get_str(i).to_string()).collect()
    }

    /// Appends every id of `other`.
    pub fn extend_from(&mut self, other: &IdList) {
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.ends.extend(other.ends.iter().map(|e| e + base));
    }

    /// The first `n` ids (for report samples).
    pub fn sample(&self, n: usize) -> Vec<String> {
        self.strings(0..n.min(self.len()))
    }
}

impl<S: AsRef<str>> FromIterator<S> for IdList {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut l = IdList::new();
        for s in iter {
            l.push(s.as_ref().as_bytes());
        }
        l
    }
}

/// One hash partition: ids in arrival order (bytes back to back, 32-bit end offsets) with
/// the low 32 bits of their hashes (the high bits chose the partition).
#[derive(Debug, Default)]
pub struct Partition {
    bytes: Vec<u8>,
    ends: Vec<u32>,
    hashes: Vec<u32>,
}

impl Partition {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    #[inline]
    pub fn hash(&self, i: usize) -> u32 {
        self.hashes[i]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }
}

/// A side of a diff grew past what one partition can index (4 GiB of id bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("more than {} GiB of ids in one hash partition; split the source list", u32::MAX as u64 / (1 << 30) + 1)]
pub struct TooManyIds;

/// Ids of one side of a diff (source or baseline), spread over [`PARTITIONS`] partitions
/// by hash. Duplicates are kept here; the diff counts and drops them.
pub struct IdCollector {
    hasher: IdHasher,
    parts: Vec<Partition>,
    total: u64,
}

impl Default for IdCollector {
    fn default() -> Self {
        IdCollector::new()
    }
}

impl std::fmt::Debug for IdCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdCollector")
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl IdCollector {
    pub fn new() -> Self {
        IdCollector {
            hasher: IdHasher::default(),
            parts: (0..PARTITIONS).map(|_| Partition::default()).collect(),
            total: 0,
        }
    }

    #[inline]
    pub fn push(&mut self, id: &[u8]) -> Result<(), TooManyIds> {
        let h = self.hasher.hash(id);
        let p = &mut self.parts[(h >> PARTITION_SHIFT) as usize];
        let end = u32::try_from(p.bytes.len() + id.len()).map_err(|_| TooManyIds)?;
        p.bytes.extend_from_slice(id);
        p.ends.push(end);
        p.hashes.push(h as u32);
        self.total += 1;
        Ok(())
    }

    /// Ids pushed (duplicates included).
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn partitions(&self) -> &[Partition] {
        &self.parts
    }

    /// Heap bytes held (for logs).
    pub fn heap_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|p| p.bytes.capacity() + p.ends.capacity() * 4 + p.hashes.capacity() * 4)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keep_order_and_bytes() {
        let mut l = IdList::new();
        l.push(b"a");
        l.push(b"");
        l.push("ünï".as_bytes());
        assert_eq!(l.len(), 3);
        assert_eq!(l.get(0), b"a");
        assert_eq!(l.get(1), b"");
        assert_eq!(l.get_str(2), "ünï");
        let mut m: IdList = ["x", "y"].into_iter().collect();
        m.extend_from(&l);
        assert_eq!(
            m.iter_str().collect::<Vec<_>>(),
            vec!["x", "y", "a", "", "ünï"]
        );
        assert_eq!(m.sample(2), vec!["x".to_string(), "y".to_string()]);
        assert_eq!(m.strings(3..5), vec![String::new(), "ünï".to_string()]);
    }

    #[test]
    fn equal_ids_land_in_the_same_partition() {
        let mut a = IdCollector::new();
        let mut b = IdCollector::new();
        for i in 0..1000 {
            a.push(format!("user-{i}").as_bytes()).expect("push");
            b.push(format!("user-{}", 999 - i).as_bytes())
                .expect("push");
        }
        assert_eq!(a.total(), 1000);
        let used = a.partitions().iter().filter(|p| !p.is_empty()).count();
        assert!(used > PARTITIONS / 2, "ids spread over partitions: {used}");
        for (pa, pb) in a.partitions().iter().zip(b.partitions()) {
            let mut x: Vec<&[u8]> = pa.iter().collect();
            let mut y: Vec<&[u8]> = pb.iter().collect();
            x.sort();
            y.sort();
            assert_eq!(x, y);
        }
    }
}
