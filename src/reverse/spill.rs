//! The diff's temporary files: a collector past its memory budget appends each hash
//! partition to a file of its own in a private folder under the temporary directory, and
//! the diff reads them back one partition at a time.
//!
//! File `{dir}/{partition}.ids` holds one block per spill: `count: u32 LE, bytes: u32 LE`,
//! then `count` end offsets (u32 LE, counted from the block's start), `count` hashes
//! (u32 LE) and the ids' bytes back to back. Reading back checks every offset and that
//! each partition gives back as many ids as were written to it: a damaged or missing file
//! is an error, never a panic or a silently shorter list.
//!
//! The folder is removed when its collector is dropped. A run that was killed cannot do
//! that, so creating a folder first removes those of the same user whose process is gone
//! (Linux): they hold people's ids and nothing else would ever remove them.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const PREFIX: &str = "cohort-sync-ids-";

/// Why a partition could not be read back.
#[derive(Debug)]
pub enum ReadBackError {
    /// The partition holds more than 4 GiB of ids.
    TooMany,
    Io(std::io::Error),
}

impl From<std::io::Error> for ReadBackError {
    fn from(e: std::io::Error) -> Self {
        ReadBackError::Io(e)
    }
}

/// One collector's spill folder.
#[derive(Debug)]
pub struct SpillDir {
    dir: PathBuf,
    /// Ids written to each partition's file.
    written: Vec<u64>,
    /// A block's offsets and hashes on their way to the file.
    scratch: Vec<u8>,
}

impl SpillDir {
    /// A new private folder under the temporary directory, for `partitions` files.
    pub fn create(partitions: usize) -> std::io::Result<SpillDir> {
        let base = std::env::temp_dir();
        loop {
            let dir = base.join(format!(
                "{PREFIX}{}-{:016x}",
                std::process::id(),
                fastrand::u64(..)
            ));
            // The ids are people's: the folder is its owner's only.
            match crate::storage::create_private_dir(&dir) {
                Ok(()) => {
                    sweep_stale(&base, &dir);
                    return Ok(SpillDir {
                        dir,
                        written: vec![0; partitions],
                        scratch: Vec::new(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, partition: usize) -> PathBuf {
        self.dir.join(format!("{partition}.ids"))
    }

    /// Appends one block to `partition`'s file: ids `bytes`, cut at `ends` (offsets into
    /// `bytes`), with their `hashes`.
    pub fn append(
        &mut self,
        partition: usize,
        ends: &[u32],
        hashes: &[u32],
        bytes: &[u8],
    ) -> std::io::Result<()> {
        let too_big = || std::io::Error::other("a spilled block is over 4 GiB");
        let count = u32::try_from(ends.len()).map_err(|_| too_big())?;
        let len = u32::try_from(bytes.len()).map_err(|_| too_big())?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file(partition))?;
        let s = &mut self.scratch;
        s.clear();
        s.reserve(8 + ends.len() * 8);
        s.extend_from_slice(&count.to_le_bytes());
        s.extend_from_slice(&len.to_le_bytes());
        for end in ends {
            s.extend_from_slice(&end.to_le_bytes());
        }
        for hash in hashes {
            s.extend_from_slice(&hash.to_le_bytes());
        }
        f.write_all(s)?;
        f.write_all(bytes)?;
        self.written[partition] += ends.len() as u64;
        Ok(())
    }

    /// Appends every id spilled to `partition` onto `ends`, `hashes` and `bytes` (ends
    /// shifted past the bytes already there); `chunk` is reusable reading space.
    pub fn read(
        &self,
        partition: usize,
        ends: &mut Vec<u32>,
        hashes: &mut Vec<u32>,
        bytes: &mut Vec<u8>,
        chunk: &mut Vec<u8>,
    ) -> Result<(), ReadBackError> {
        let want = self.written[partition];
        if want == 0 {
            return Ok(());
        }
        let path = self.file(partition);
        let damaged = |what: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is damaged: {what}", path.display()),
            )
        };
        let mut f = std::fs::File::open(&path)?;
        let mut got = 0u64;
        while got < want {
            let mut head = [0u8; 8];
            f.read_exact(&mut head)?;
            let [c0, c1, c2, c3, l0, l1, l2, l3] = head;
            let count = u32::from_le_bytes([c0, c1, c2, c3]) as usize;
            let len = u32::from_le_bytes([l0, l1, l2, l3]);
            got += count as u64;
            if got > want {
                return Err(damaged(format!("more than the {want} ids written")).into());
            }
            chunk.clear();
            chunk.resize(count * 8, 0);
            f.read_exact(chunk)?;
            let (block_ends, block_hashes) = chunk.split_at(count * 4);
            let base = bytes.len();
            if u32::try_from(base + len as usize).is_err() {
                return Err(ReadBackError::TooMany);
            }
            ends.reserve(count);
            let mut prev = 0u32;
            for end in block_ends.chunks_exact(4) {
                let end = u32::from_le_bytes([end[0], end[1], end[2], end[3]]);
                if end < prev || end > len {
                    return Err(damaged("an id's end lies outside its block".into()).into());
                }
                prev = end;
                // In range: base + len was checked above.
                ends.push((base + end as usize) as u32);
            }
            if prev != len {
                return Err(damaged("a block's bytes do not match its ids".into()).into());
            }
            hashes.extend(
                block_hashes
                    .chunks_exact(4)
                    .map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]])),
            );
            bytes.resize(base + len as usize, 0);
            f.read_exact(&mut bytes[base..])?;
        }
        if f.read(&mut [0u8; 1])? != 0 {
            return Err(damaged(format!("bytes after the {want} ids written")).into());
        }
        Ok(())
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes the spill folders under `base` left by processes that are gone, when they
/// belong to the same user as `mine` (just created). Only where `/proc` tells which
/// processes are alive; a folder that cannot be removed is left, with a warning.
fn sweep_stale(base: &Path, mine: &Path) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(me) = std::fs::symlink_metadata(mine) else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(base) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|rest| rest.split_once('-'))
                .and_then(|(pid, _)| pid.parse::<u32>().ok())
            else {
                continue;
            };
            let path = entry.path();
            // Not followed: a link named like a spill folder is not one.
            let ours =
                std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me.uid());
            let alive = Path::new(&format!("/proc/{pid}")).exists();
            if !ours || alive || path == mine {
                continue;
            }
            match std::fs::remove_dir_all(&path) {
                Ok(()) => tracing::info!(
                    "removed {}: ids spilled by a run that was stopped (process {pid} is gone)",
                    path.display()
                ),
                Err(e) => tracing::warn!(
                    "could not remove {} (left by process {pid}, which is gone): {e}",
                    path.display()
                ),
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (base, mine);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn folders_of_gone_processes_are_removed_and_no_other() {
        let base = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let gone = child.id();
        child.wait().expect("wait");
        let mine = base
            .path()
            .join(format!("{PREFIX}{}-1", std::process::id()));
        let stale = base.path().join(format!("{PREFIX}{gone}-2"));
        let alive = base.path().join(format!("{PREFIX}1-3"));
        let other = base.path().join("cohort-sync-other-5");
        for d in [&mine, &stale, &alive, &other] {
            std::fs::create_dir(d).expect("mkdir");
            std::fs::write(d.join("0.ids"), b"x").expect("write");
        }
        let target = base.path().join("kept");
        std::fs::create_dir(&target).expect("mkdir");
        let link = base.path().join(format!("{PREFIX}{gone}-4"));
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        sweep_stale(base.path(), &mine);
        assert!(!stale.exists(), "the gone process's folder is removed");
        for kept in [&mine, &alive, &other, &target] {
            assert!(kept.join("0.ids").exists() || kept == &target, "{kept:?}");
        }
        assert!(target.exists() && link.symlink_metadata().is_ok());
    }
}
