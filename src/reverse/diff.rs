//! The set difference both ways between a source list and a baseline, partition by
//! partition: a small open-addressing table per partition holds the baseline, the source
//! probes it, and what is left unmatched on either side is to add or to remove.
//! Duplicates on either side are counted and dropped.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::idset::{IdCollector, IdList, IdSetError, Partition, PartitionBuf};

/// What the diff found, besides the two lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiffCounts {
    /// Distinct ids in the source.
    pub source_distinct: u64,
    /// Source ids seen again after their first occurrence.
    pub source_duplicates: u64,
    pub baseline_distinct: u64,
    pub baseline_duplicates: u64,
    /// In both: nothing to do.
    pub unchanged: u64,
}

impl DiffCounts {
    fn merge(&mut self, o: &DiffCounts) {
        self.source_distinct += o.source_distinct;
        self.source_duplicates += o.source_duplicates;
        self.baseline_distinct += o.baseline_distinct;
        self.baseline_duplicates += o.baseline_duplicates;
        self.unchanged += o.unchanged;
    }
}

/// Ids in the source and not in the baseline (`add`), in the baseline and not in the
/// source (`remove`). Order: by partition, then order of arrival.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub add: IdList,
    pub remove: IdList,
    pub counts: DiffCounts,
}

/// Diffs `source` against `baseline` on up to `threads` threads.
pub fn diff(
    source: &IdCollector,
    baseline: &IdCollector,
    threads: usize,
) -> Result<Diff, IdSetError> {
    let parts = source.partition_count();
    let next = AtomicUsize::new(0);
    let threads = threads.clamp(1, parts.max(1));
    let worker = || -> Result<Vec<(usize, Diff)>, IdSetError> {
        let mut done = Vec::new();
        // One set of buffers per thread for all its partitions.
        let (mut s_buf, mut b_buf) = (PartitionBuf::default(), PartitionBuf::default());
        let mut scratch = Scratch::default();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= parts {
                return Ok(done);
            }
            let s = source.load_partition(i, &mut s_buf)?;
            let b = baseline.load_partition(i, &mut b_buf)?;
            let d = diff_partition(s, b, &mut scratch)?;
            done.push((i, d));
        }
    };
    let mut results: Vec<(usize, Diff)> = if threads == 1 {
        worker()?
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
            let mut all = Vec::with_capacity(parts);
            for h in handles {
                match h.join() {
                    Ok(r) => all.extend(r?),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            Ok::<_, IdSetError>(all)
        })?
    };
    results.sort_by_key(|(i, _)| *i);
    // Each partition's lists are moved into the result, not copied: the merge never
    // holds the ids twice.
    let mut out = Diff::default();
    for (_, d) in results {
        out.add.append(d.add);
        out.remove.append(d.remove);
        out.counts.merge(&d.counts);
    }
    Ok(out)
}

const EMPTY: u64 = 0;
const BASELINE_DUPLICATE: u8 = 2;
const SEEN: u8 = 1;

/// Table slot: high 32 bits the id's hash, low 32 bits its entry number + 1 (0 = empty).
/// Entries `0..nb` are baseline ids, `nb..nb+ns` source ids.
fn slot(hash: u32, entry: u32) -> u64 {
    ((hash as u64) << 32) | (entry as u64 + 1)
}

/// Ids looked up this far ahead have their table slot fetched into the cache while the
/// current one is probed: a partition's table is megabytes, so nearly every probe would
/// otherwise wait for memory.
const AHEAD: usize = 8;

/// Asks the CPU to bring `slot` into its cache (a hint; nothing elsewhere than x86-64).
#[inline(always)]
fn prefetch(slot: &u64) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch only hints the cache; the address is a valid reference.
        unsafe { _mm_prefetch(std::ptr::from_ref(slot).cast::<i8>(), _MM_HINT_T0) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

/// Whether two ids are equal: ids of 8 to 16 bytes (most) are compared as two
/// overlapping words inline, the rest with `==`.
#[inline(always)]
fn same_id(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let n = a.len();
    if (8..=16).contains(&n) {
        let word = |s: &[u8], at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&s[at..at + 8]);
            u64::from_ne_bytes(w)
        };
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    a == b
}

/// A diff thread's hash table and baseline states, reused from one partition to the next:
/// allocating them per partition (8 MiB of table at 10,000,000 ids a side) meant fresh
/// pages to fault in every time, which cost more than the probing.
#[derive(Default)]
struct Scratch {
    table: Vec<u64>,
    state: Vec<u8>,
}

/// `v` as `len` copies of `value`, written out. (`vec![0; len]` asks the allocator for
/// zeroed memory, which for fresh pages means mapping the shared zero page: the probes'
/// reads then fault each page in as the zero page and every first write faults again,
/// with a TLB flush on every core the process runs on.)
fn fill<T: Copy>(v: &mut Vec<T>, len: usize, value: T) {
    v.clear();
    v.resize(len, value);
}

fn diff_partition(
    src: &Partition,
    base: &Partition,
    scratch: &mut Scratch,
) -> Result<Diff, IdSetError> {
    let nb = base.len();
    let ns = src.len();
    if nb + ns >= u32::MAX as usize {
        return Err(IdSetError::TooMany);
    }
    let cap = ((nb + ns) * 2).max(16).next_power_of_two();
    let mask = cap - 1;
    fill(&mut scratch.table, cap, EMPTY);
    fill(&mut scratch.state, nb, 0u8);
    let (table, state) = (&mut scratch.table, &mut scratch.state);
    let mut counts = DiffCounts::default();

    // Where `id` (with `hash`) sits, or the empty slot where it would go.
    let find = |table: &[u64], hash: u32, id: &[u8]| -> (usize, Option<usize>) {
        let mut i = hash as usize & mask;
        loop {
            let s = table[i];
            if s == EMPTY {
                return (i, None);
            }
            if (s >> 32) as u32 == hash {
                let e = (s as u32 - 1) as usize;
                let other = if e < nb { base.get(e) } else { src.get(e - nb) };
                if same_id(other, id) {
                    return (i, Some(e));
                }
            }
            i = (i + 1) & mask;
        }
    };

    for (b, st) in state.iter_mut().enumerate() {
        if b + AHEAD < nb {
            prefetch(&table[base.hash(b + AHEAD) as usize & mask]);
        }
        let h = base.hash(b);
        match find(table, h, base.get(b)) {
            (_, Some(_)) => {
                *st = BASELINE_DUPLICATE;
                counts.baseline_duplicates += 1;
            }
            (at, None) => {
                table[at] = slot(h, b as u32);
                counts.baseline_distinct += 1;
            }
        }
    }

    let mut add = IdList::new();
    for s in 0..ns {
        if s + AHEAD < ns {
            prefetch(&table[src.hash(s + AHEAD) as usize & mask]);
        }
        let h = src.hash(s);
        let id = src.get(s);
        match find(table, h, id) {
            (_, Some(e)) if e < nb && state[e] != SEEN => {
                state[e] = SEEN;
                counts.unchanged += 1;
                counts.source_distinct += 1;
            }
            (_, Some(_)) => counts.source_duplicates += 1,
            (at, None) => {
                table[at] = slot(h, (nb + s) as u32);
                counts.source_distinct += 1;
                add.push(id);
            }
        }
    }
    let mut remove = IdList::new();
    for (b, st) in state.iter().enumerate() {
        if *st == 0 {
            remove.push(base.get(b));
        }
    }
    Ok(Diff {
        add,
        remove,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn same_id_tells_every_byte_apart() {
        for len in 0..40usize {
            let a: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_id(&a, &a.clone()), "len {len}");
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 1;
                assert!(!same_id(&a, &b), "len {len}, byte {at}");
            }
            let mut longer = a.clone();
            longer.push(b'x');
            assert!(!same_id(&a, &longer), "len {len} vs {}", len + 1);
        }
    }

    fn collect(ids: &[String]) -> IdCollector {
        let mut c = IdCollector::new();
        for id in ids {
            c.push(id.as_bytes()).expect("push");
        }
        c
    }

    fn sorted(l: &IdList) -> Vec<String> {
        let mut v: Vec<String> = l.iter_str().map(str::to_string).collect();
        v.sort();
        v
    }

    #[test]
    fn matches_set_difference_with_duplicates_on_both_sides() {
        let mut rng = fastrand::Rng::with_seed(7);
        let source: Vec<String> = (0..20_000)
            .map(|_| format!("u{}", rng.u32(0..15_000)))
            .collect();
        let baseline: Vec<String> = (0..12_000)
            .map(|_| format!("u{}", rng.u32(5_000..25_000)))
            .collect();
        let s: BTreeSet<&String> = source.iter().collect();
        let b: BTreeSet<&String> = baseline.iter().collect();
        let want_add: Vec<String> = s.difference(&b).map(|x| x.to_string()).collect();
        let want_remove: Vec<String> = b.difference(&s).map(|x| x.to_string()).collect();
        for threads in [1, 2, 3] {
            let d = diff(&collect(&source), &collect(&baseline), threads).expect("diff");
            assert_eq!(sorted(&d.add), want_add);
            assert_eq!(sorted(&d.remove), want_remove);
            assert_eq!(d.counts.source_distinct, s.len() as u64);
            assert_eq!(d.counts.source_duplicates, (source.len() - s.len()) as u64);
            assert_eq!(d.counts.baseline_distinct, b.len() as u64);
            assert_eq!(
                d.counts.baseline_duplicates,
                (baseline.len() - b.len()) as u64
            );
            assert_eq!(d.counts.unchanged, s.intersection(&b).count() as u64);
        }
    }

    #[test]
    fn spilling_to_disk_changes_nothing() {
        let source: Vec<String> = (0..30_000).map(|i| format!("s{}", i % 20_000)).collect();
        let baseline: Vec<String> = (0..15_000).map(|i| format!("s{}", i + 10_000)).collect();
        let in_memory = diff(&collect(&source), &collect(&baseline), 2).expect("diff");
        let mut s = IdCollector::with_budget(4096);
        let mut b = IdCollector::with_budget(4096);
        source
            .iter()
            .for_each(|id| s.push(id.as_bytes()).expect("push"));
        baseline
            .iter()
            .for_each(|id| b.push(id.as_bytes()).expect("push"));
        assert!(s.spilled() > 0 && b.spilled() > 0);
        assert_eq!(diff(&s, &b, 2).expect("diff"), in_memory);
    }

    #[test]
    fn output_order_is_reproducible() {
        let source: Vec<String> = (0..5000).map(|i| format!("a{i}")).collect();
        let one = diff(&collect(&source), &IdCollector::new(), 1).expect("diff");
        let two = diff(&collect(&source), &IdCollector::new(), 2).expect("diff");
        assert_eq!(one, two);
        assert_eq!(one.add.len(), 5000);
        assert!(one.remove.is_empty());
    }

    #[test]
    fn empty_sides() {
        let d = diff(&IdCollector::new(), &IdCollector::new(), 2).expect("diff");
        assert!(d.add.is_empty() && d.remove.is_empty());
        let base: Vec<String> = vec!["x".into(), "x".into()];
        let d = diff(&IdCollector::new(), &collect(&base), 2).expect("diff");
        assert_eq!(sorted(&d.remove), vec!["x".to_string()]);
        assert_eq!(d.counts.baseline_duplicates, 1);
    }
}
