//! The process's memory allocators: jemalloc for the Rust heap (Linux with glibc), and
//! glibc's malloc, still used by C code (zstd's contexts), set up once at start-up.
//!
//! An export allocates and frees buffers of a few hundred KiB to a few MiB all the time
//! (record batches, the Parquet writer's pages, compressed pages, upload pieces). With
//! glibc that costs either CPU or memory. Blocks above its mmap threshold get their own
//! mapping, returned when freed, so every page is mapped and faulted in afresh: 57,000
//! page faults and ~0.2 s of system time for `convert` of a 2,000,000-row body, a sixth of
//! its CPU. Raised above the page buffers (4 MiB), the threshold puts them in the heap,
//! which fragments: peak RSS then creeps up with the length of the export (2,000,000 vs
//! 200,000 members 1.17-1.23; malloc stats over a 10,000,000-row convert: the heap grew
//! from 21 to 33 MB with 11-15 MB in use). jemalloc keeps freed blocks in size classes
//! for reuse: 17,700 page faults (half of them zstd's contexts, from glibc), ~0.1 s of
//! system time, and the same export's peak RSS 2,000,000 vs 200,000 members 1.05-1.08.
//! Memory handed out zeroed maps the shared zero page until written, so hot tables are
//! written out rather than allocated zeroed (see `reverse::diff`).
//!
//! One jemalloc arena: its default (four per core) gives each thread its own and the
//! freed buffers of one are not reused by another (peak RSS of that export 67 vs 56 MiB,
//! ratio 1.16 vs 1.08, no faster). `_RJEM_MALLOC_CONF` overrides it.
//!
//! glibc keeps a fixed 256 KiB mmap threshold (by default it rises to the largest block
//! freed so far, after which such blocks stay in the heap for good) and one arena. A
//! variable the user sets (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_ARENA_MAX`) wins over these.

/// The Rust heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (read by jemalloc itself, before `main`; the
/// `_RJEM_MALLOC_CONF` variable is read after it and wins).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static JEMALLOC_CONF: &[u8; 10] = b"narenas:1\0";

/// Blocks of at least this many bytes get their own mapping.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD_BYTES: libc::c_int = 256 * 1024;

/// Malloc arenas (every thread shares one).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const ARENA_MAX: libc::c_int = 1;

/// Applies the start-up settings. Call first thing in `main`, before any thread exists.
pub fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: mallopt only changes malloc's tuning parameters; called from main
            // before any other thread exists. A 0 return (setting refused) is harmless.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
        }
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX) };
        }
    }
}
