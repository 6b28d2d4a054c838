//! The process's memory allocator: settings applied once at start-up.
//!
//! An export allocates and frees buffers of a few MiB all the time (record batches,
//! compressed pages, upload parts). glibc's malloc raises its mmap threshold to the size
//! of the largest block freed so far, after which such buffers are carved from the heap
//! arenas and, once freed, stay in the process: peak RSS then grows with the length of
//! the run although the live heap does not (measured on a 2,000,000-row body: 75 MiB RSS
//! for 50 MiB of heap). A fixed threshold keeps every buffer above it in its own mapping,
//! returned to the OS when freed.
//!
//! One arena: the encoder starts a thread per batch for its columns and glibc hands new
//! threads the arenas in turn, so with two arenas a column's buffers alternate between
//! them and each arena grows to hold the whole working set (malloc_stats at every row
//! group of a 2,000,000-row export: the two arenas together grew from 12.6 to 20 MB while
//! 7-9 MB was in use; peak RSS 2,000,000 vs 200,000 rows 1.16-1.19, with one arena
//! 1.12-1.14 for ~3% more CPU). Small blocks still come from per-thread caches without
//! the arena's lock. A variable the user sets (`MALLOC_MMAP_THRESHOLD_`,
//! `MALLOC_ARENA_MAX`) wins over these values. Other platforms' allocators are left
//! alone.

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
