//! Where the Parquet writer's bytes go: collected into pieces that are hashed, counted
//! and sent to the uploader through a bounded channel (the writer blocks when the upload
//! falls behind, so memory stays bounded).

use std::io::{self, Write};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// What the encoder sends to the uploader.
pub enum PartMsg {
    Bytes(Bytes),
    /// The footer was written and every byte sent: the upload may be completed.
    Done,
}

/// Bytes are handed over in pieces of this size (the uploader groups them into parts).
/// Below the allocator's mmap threshold (see `memory`): each piece is a new buffer, and
/// from the heap it reuses pages instead of mapping fresh ones.
pub const HANDOFF_BYTES: usize = 128 * 1024;

pub struct PartSink {
    buf: Vec<u8>,
    tx: mpsc::Sender<PartMsg>,
    hasher: Sha256,
    written: u64,
    /// Set when the uploader went away (a send failed).
    pub uploader_gone: bool,
}

impl PartSink {
    pub fn new(tx: mpsc::Sender<PartMsg>) -> Self {
        PartSink {
            buf: Vec::with_capacity(HANDOFF_BYTES),
            tx,
            hasher: Sha256::new(),
            written: 0,
            uploader_gone: false,
        }
    }

    /// Sends what is buffered.
    pub fn ship(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(HANDOFF_BYTES),
        ));
        self.hasher.update(&chunk);
        self.written += chunk.len() as u64;
        if self.tx.blocking_send(PartMsg::Bytes(chunk)).is_err() {
            self.uploader_gone = true;
            return Err(io::Error::other("the uploader stopped"));
        }
        Ok(())
    }

    /// Sends the rest and `Done`; returns (bytes written, hex SHA-256).
    pub fn finish(&mut self) -> io::Result<(u64, String)> {
        self.ship()?;
        let digest = std::mem::take(&mut self.hasher).finalize();
        if self.tx.blocking_send(PartMsg::Done).is_err() {
            self.uploader_gone = true;
            return Err(io::Error::other("the uploader stopped"));
        }
        Ok((self.written, hex(&digest)))
    }
}

impl Write for PartSink {
    /// Takes all of `data`, shipping each piece as it fills (a piece never grows past
    /// [`HANDOFF_BYTES`]).
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let room = HANDOFF_BYTES.saturating_sub(self.buf.len()).max(1);
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.buf.extend_from_slice(now);
            if self.buf.len() >= HANDOFF_BYTES {
                self.ship()?;
            }
            rest = later;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
