//! Compact id storage for the diff: ids are kept as bytes back to back (no allocation per
//! id) and spread over hash partitions, so that the diff can work one small partition at a
//! time (small hash tables that stay in cache) and on several threads.
//!
//! Memory is bounded: once a collector holds more than its budget (32 MiB by default,
//! `COHORT_SYNC_DIFF_MEMORY_MIB`), every partition is appended to its own temporary file
//! (`spill`) and cleared; once the list is read, the rest is spilled too
//! ([`IdCollector::finish`]) and the diff loads one partition (1/64 of the ids) at a time
//! into buffers it reuses. So the peak is the collectors' budgets, whatever the lists'
//! length (bench case `diffscale`: the same from 2,000,000 to 10,000,000 ids a side);
//! lists of up to ~1,500,000 ids never touch the disk.

use std::borrow::Cow;

use super::spill::{ReadBackError, SpillDir};

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

/// An ordered list of ids stored back to back, in segments: appending a whole list
/// ([`IdList::append`]) moves its segments instead of copying its ids, so the diff's merge
/// of 64 partition lists never holds the ids twice.
#[derive(Debug, Clone, Default)]
pub struct IdList {
    segments: Vec<Segment>,
    /// Ids before each segment (for [`IdList::get`]).
    starts: Vec<usize>,
    len: usize,
    byte_len: usize,
}

/// Ids back to back with 32-bit end offsets; a segment never holds more than 4 GiB.
#[derive(Debug, Clone, Default)]
struct Segment {
    bytes: Vec<u8>,
    ends: Vec<u32>,
}

impl Segment {
    #[inline]
    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }
}

impl PartialEq for IdList {
    /// Same ids in the same order, however they are segmented.
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for IdList {}

impl IdList {
    pub fn new() -> Self {
        IdList::default()
    }

    #[inline]
    pub fn push(&mut self, id: &[u8]) {
        let fits = self
            .segments
            .last()
            .is_some_and(|s| s.bytes.len() + id.len() <= u32::MAX as usize);
        if !fits {
            self.starts.push(self.len);
            self.segments.push(Segment::default());
        }
        if let Some(seg) = self.segments.last_mut() {
            seg.bytes.extend_from_slice(id);
            // At most u32::MAX: checked above (one id alone is far below 4 GiB).
            seg.ends
                .push(u32::try_from(seg.bytes.len()).unwrap_or(u32::MAX));
        }
        self.len += 1;
        self.byte_len += id.len();
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes used by the ids themselves.
    pub fn byte_len(&self) -> usize {
        self.byte_len
    }

    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        let seg = if self.segments.len() == 1 {
            0
        } else {
            self.starts.partition_point(|s| *s <= i).saturating_sub(1)
        };
        self.segments[seg].get(i - self.starts[seg])
    }

    /// The id as text (ids are checked to be UTF-8 when collected).
    pub fn get_str(&self, i: usize) -> &str {
        std::str::from_utf8(self.get(i)).unwrap_or("\u{fffd}")
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let mut segs = self.segments.iter();
        let mut cur: Option<(&Segment, usize)> = None;
        let all = std::iter::from_fn(move || {
            loop {
                if let Some((seg, i)) = cur.as_mut()
                    && *i < seg.ends.len()
                {
                    let id = seg.get(*i);
                    *i += 1;
                    return Some(id);
                }
                cur = Some((segs.next()?, 0));
            }
        });
        ExactLen {
            inner: all,
            left: self.len,
        }
    }

    pub fn iter_str(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.iter()
            .map(|id| std::str::from_utf8(id).unwrap_or("\u{fffd}"))
    }

    /// Ids `range` as owned strings (one membership/upload chunk).
    pub fn strings(&self, range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| self.get_str(i).to_string()).collect()
    }

    /// Appends every id of `other`, copying them.
    pub fn extend_from(&mut self, other: &IdList) {
        for id in other.iter() {
            self.push(id);
        }
    }

    /// Appends every id of `other`, moving its segments (no id is copied).
    pub fn append(&mut self, other: IdList) {
        for seg in other.segments {
            if seg.ends.is_empty() {
                continue;
            }
            self.starts.push(self.len);
            self.len += seg.ends.len();
            self.byte_len += seg.bytes.len();
            self.segments.push(seg);
        }
    }

    /// The first `n` ids (for report samples).
    pub fn sample(&self, n: usize) -> Vec<String> {
        self.strings(0..n.min(self.len()))
    }
}

/// An iterator that knows how many items are left.
struct ExactLen<I> {
    inner: I,
    left: usize,
}

impl<'a, I: Iterator<Item = &'a [u8]>> Iterator for ExactLen<I> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.inner.next()?;
        self.left -= 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<'a, I: Iterator<Item = &'a [u8]>> ExactSizeIterator for ExactLen<I> {}

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
#[derive(Debug, Clone, Default)]
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

    fn push(&mut self, id: &[u8], hash: u32) -> Result<(), IdSetError> {
        let end = u32::try_from(self.bytes.len() + id.len()).map_err(|_| IdSetError::TooMany)?;
        self.bytes.extend_from_slice(id);
        self.ends.push(end);
        self.hashes.push(hash);
        Ok(())
    }

    /// Empty, keeping the memory.
    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.hashes.clear();
    }

    /// Appends every id of `other` (with its hash).
    fn append_from(&mut self, other: &Partition) -> Result<(), IdSetError> {
        let base = self.bytes.len();
        u32::try_from(base + other.bytes.len()).map_err(|_| IdSetError::TooMany)?;
        self.bytes.extend_from_slice(&other.bytes);
        // In range: the sum was checked above.
        self.ends
            .extend(other.ends.iter().map(|e| (base + *e as usize) as u32));
        self.hashes.extend_from_slice(&other.hashes);
        Ok(())
    }
}

/// Memory to read spilled partitions back into, reused from one partition to the next.
#[derive(Debug, Default)]
pub struct PartitionBuf {
    part: Partition,
    /// One block's offsets and hashes as read from the file.
    chunk: Vec<u8>,
}

/// Why ids could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum IdSetError {
    #[error("more than 4 GiB of ids in one hash partition; split the source list")]
    TooMany,
    #[error(
        "spilling ids to a temporary file under {dir}: {source} (set TMPDIR to a disk with room, or raise {MEMORY_ENV})"
    )]
    Spill { dir: String, source: std::io::Error },
}

/// Environment variable: MiB of ids a collector keeps in memory before spilling to disk.
pub const MEMORY_ENV: &str = "COHORT_SYNC_DIFF_MEMORY_MIB";
/// Default of [`MEMORY_ENV`].
pub const DEFAULT_MEMORY_MIB: usize = 32;

/// The budget in bytes: [`MEMORY_ENV`] when set to a positive number of MiB, else
/// `default_mib`.
pub fn budget_from_env(default_mib: usize) -> usize {
    std::env::var(MEMORY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|m| *m > 0)
        .unwrap_or(default_mib)
        .saturating_mul(1 << 20)
}

/// Ids of one side of a diff (source or baseline), spread over [`PARTITIONS`] partitions
/// by hash. Duplicates are kept here; the diff counts and drops them.
pub struct IdCollector {
    hasher: IdHasher,
    parts: Vec<Partition>,
    total: u64,
    /// Bytes held in memory (ids plus 8 bytes of bookkeeping each).
    held: usize,
    budget: usize,
    spill: Option<SpillDir>,
    spilled: u64,
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
            .field("spilled", &self.spilled)
            .finish_non_exhaustive()
    }
}

impl IdCollector {
    /// A collector with the memory budget of [`MEMORY_ENV`] (default 32 MiB).
    pub fn new() -> Self {
        IdCollector::with_budget(budget_from_env(DEFAULT_MEMORY_MIB))
    }

    /// A collector that spills to disk past `budget` bytes.
    pub fn with_budget(budget: usize) -> Self {
        IdCollector {
            hasher: IdHasher::default(),
            parts: (0..PARTITIONS).map(|_| Partition::default()).collect(),
            total: 0,
            held: 0,
            budget: budget.max(1),
            spill: None,
            spilled: 0,
        }
    }

    #[inline]
    pub fn push(&mut self, id: &[u8]) -> Result<(), IdSetError> {
        let h = self.hasher.hash(id);
        self.parts[(h >> PARTITION_SHIFT) as usize].push(id, h as u32)?;
        self.total += 1;
        self.held += id.len() + 8;
        if self.held > self.budget {
            self.spill_all()?;
        }
        Ok(())
    }

    /// Ids pushed (duplicates included).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Ids written to temporary files so far.
    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    pub fn partition_count(&self) -> usize {
        self.parts.len()
    }

    /// Partition `i`, with its spilled part read back first (arrival order is kept).
    pub fn partition(&self, i: usize) -> Result<Cow<'_, Partition>, IdSetError> {
        if self.spill.is_none() {
            return Ok(Cow::Borrowed(&self.parts[i]));
        }
        let mut buf = PartitionBuf::default();
        self.load_partition(i, &mut buf)?;
        Ok(Cow::Owned(buf.part))
    }

    /// Partition `i` like [`IdCollector::partition`], read back into `buf` when spilled:
    /// a diff worker reuses one buffer for all its partitions, so their memory is
    /// allocated (and its pages faulted in) once, not once per partition.
    pub fn load_partition<'a>(
        &'a self,
        i: usize,
        buf: &'a mut PartitionBuf,
    ) -> Result<&'a Partition, IdSetError> {
        let Some(spill) = &self.spill else {
            return Ok(&self.parts[i]);
        };
        buf.part.clear();
        let p = &mut buf.part;
        spill
            .read(i, &mut p.ends, &mut p.hashes, &mut p.bytes, &mut buf.chunk)
            .map_err(|e| match e {
                ReadBackError::TooMany => IdSetError::TooMany,
                ReadBackError::Io(source) => IdSetError::Spill {
                    dir: spill.dir().display().to_string(),
                    source,
                },
            })?;
        let mem = &self.parts[i];
        buf.part.append_from(mem)?;
        Ok(&buf.part)
    }

    /// Done pushing. When anything was spilled, the rest is spilled too and the memory
    /// freed: the diff then holds only the partitions it reads back, in memory the
    /// collectors gave up, instead of both on top of each other.
    pub fn finish(&mut self) -> Result<(), IdSetError> {
        if self.spill.is_some() {
            self.spill_all()?;
            for p in &mut self.parts {
                *p = Partition::default();
            }
        }
        Ok(())
    }

    /// Appends every partition to its file (one block each) and empties it, keeping its
    /// memory for the ids that come next.
    fn spill_all(&mut self) -> Result<(), IdSetError> {
        if self.spill.is_none() {
            let dir = SpillDir::create(PARTITIONS).map_err(|source| IdSetError::Spill {
                dir: std::env::temp_dir().display().to_string(),
                source,
            })?;
            tracing::info!(
                "ids exceed {} MiB in memory: spilling hash partitions to {}",
                self.budget >> 20,
                dir.dir().display()
            );
            self.spill = Some(dir);
        }
        let Some(spill) = &mut self.spill else {
            return Ok(());
        };
        for (i, p) in self.parts.iter_mut().enumerate() {
            if p.is_empty() {
                continue;
            }
            spill
                .append(i, &p.ends, &p.hashes, &p.bytes)
                .map_err(|source| IdSetError::Spill {
                    dir: spill.dir().display().to_string(),
                    source,
                })?;
            self.spilled += p.len() as u64;
            p.clear();
        }
        self.held = 0;
        crate::crash::point("reverse.ids.spilled");
        Ok(())
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
    fn an_appended_list_reads_as_one_whatever_its_segments() {
        let mut a: IdList = ["a", "bb"].into_iter().collect();
        let b: IdList = ["ccc", "", "d"].into_iter().collect();
        a.append(IdList::new());
        a.append(b.clone());
        a.push(b"ee");
        assert_eq!((a.len(), a.byte_len(), a.segments.len()), (6, 9, 2));
        let want = ["a", "bb", "ccc", "", "d", "ee"];
        assert_eq!(a.iter_str().collect::<Vec<_>>(), want);
        assert_eq!(a.iter().len(), 6);
        assert_eq!((0..6).map(|i| a.get_str(i)).collect::<Vec<_>>(), want);
        assert_eq!(a.strings(2..5), vec!["ccc", "", "d"]);
        let flat: IdList = want.into_iter().collect();
        assert_eq!(a, flat);
        assert_ne!(a, b);
        let mut copied = IdList::new();
        copied.extend_from(&a);
        assert_eq!((copied.segments.len(), copied), (1, flat));
    }

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
        let used = (0..PARTITIONS)
            .filter(|i| !a.partition(*i).expect("partition").is_empty())
            .count();
        assert!(used > PARTITIONS / 2, "ids spread over partitions: {used}");
        for i in 0..PARTITIONS {
            let (pa, pb) = (a.partition(i).expect("a"), b.partition(i).expect("b"));
            let mut x: Vec<&[u8]> = pa.iter().collect();
            let mut y: Vec<&[u8]> = pb.iter().collect();
            x.sort();
            y.sort();
            assert_eq!(x, y);
        }
    }

    #[test]
    fn spilled_partitions_read_back_in_arrival_order() {
        let mut mem = IdCollector::with_budget(usize::MAX);
        let mut disk = IdCollector::with_budget(1000);
        for i in 0..5000 {
            let id = format!("user-{i}");
            mem.push(id.as_bytes()).expect("push");
            disk.push(id.as_bytes()).expect("push");
        }
        assert_eq!(mem.spilled(), 0);
        assert!(disk.spilled() > 4000, "spilled {}", disk.spilled());
        let dir = disk
            .spill
            .as_ref()
            .map(|s| s.dir().to_path_buf())
            .expect("spill dir");
        assert!(dir.is_dir());
        for i in 0..PARTITIONS {
            let a = mem.partition(i).expect("mem");
            let b = disk.partition(i).expect("disk");
            assert_eq!(a.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
            assert_eq!(
                (0..a.len()).map(|j| a.hash(j)).collect::<Vec<_>>(),
                (0..b.len()).map(|j| b.hash(j)).collect::<Vec<_>>()
            );
        }
        // Finishing spills the rest and frees it; one reused buffer reads every partition.
        let before = disk.spilled();
        disk.finish().expect("finish");
        assert_eq!(disk.spilled(), 5000, "spilled {before}, then the rest");
        assert_eq!(disk.heap_bytes(), 0);
        let mut buf = PartitionBuf::default();
        for i in 0..PARTITIONS {
            let a = mem.partition(i).expect("mem");
            let b = disk.load_partition(i, &mut buf).expect("disk");
            assert_eq!(a.iter().collect::<Vec<_>>(), b.iter().collect::<Vec<_>>());
        }
        drop(disk);
        assert!(!dir.exists(), "temporary files are removed");
    }

    #[test]
    fn finishing_a_collector_that_never_spilled_keeps_it_in_memory() {
        let mut c = IdCollector::with_budget(usize::MAX);
        c.push(b"a").expect("push");
        c.finish().expect("finish");
        assert!(c.spill.is_none());
        let total: usize = (0..PARTITIONS)
            .map(|i| c.partition(i).expect("partition").len())
            .sum();
        assert_eq!(total, 1);
    }

    #[test]
    fn a_damaged_spill_file_is_an_error_not_a_panic() {
        let mut c = IdCollector::with_budget(100);
        for i in 0..2000 {
            c.push(format!("user-{i}").as_bytes()).expect("push");
        }
        c.finish().expect("finish");
        let path = c
            .spill
            .as_ref()
            .map(|s| s.dir().join("0.ids"))
            .expect("spill dir");
        let good = std::fs::read(&path).expect("read");
        let count = u32::from_le_bytes([good[0], good[1], good[2], good[3]]) as usize;
        let mut damaged: Vec<(&str, Vec<u8>)> = vec![
            ("cut inside a header", good[..5].to_vec()),
            ("cut inside the ids", good[..good.len() - 1].to_vec()),
        ];
        let mut end_past = good.clone();
        end_past[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        damaged.push(("an end past the block", end_past));
        let mut short = good.clone();
        let last_end = 8 + (count - 1) * 4;
        short[last_end..last_end + 4].copy_from_slice(&0u32.to_le_bytes());
        damaged.push(("bytes left over", short));
        damaged.push(("a block too many", [good.as_slice(), &good].concat()));
        for (what, bytes) in damaged {
            std::fs::write(&path, bytes).expect("write");
            let err = c.partition(0).expect_err(what);
            assert!(matches!(err, IdSetError::Spill { .. }), "{what}: {err}");
        }
        std::fs::write(&path, &good).expect("write");
        assert!(c.partition(0).is_ok());
        std::fs::remove_file(&path).expect("remove");
        let err = c.partition(0).expect_err("a missing file");
        assert!(err.to_string().contains("No such file"), "{err}");
    }
}
