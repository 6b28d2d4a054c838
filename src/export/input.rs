//! The decoded body as a growing buffer of complete lines: reads in large blocks, keeps
//! the unconsumed tail (a record cut by a block boundary) and knows the line number of
//! any position it still holds, for error messages.

use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::decode::{BodyInfo, DecodedBody};
use super::error::ExportError;

/// Bytes read ahead of the parser per refill.
pub const READ_BLOCK: usize = 512 * 1024;

pub struct Input {
    reader: Pin<Box<dyn AsyncRead + Send>>,
    pub info: BodyInfo,
    pub buf: Vec<u8>,
    /// Everything before `start` was parsed.
    pub start: usize,
    pub eof: bool,
    pub lines: Lines,
    block: usize,
}

/// Line counting over the buffer: the 1-based line number of `buf[pos]`.
pub struct Lines {
    pos: usize,
    line: u64,
}

impl Input {
    /// Reads `block` bytes ahead per refill.
    pub fn new(body: DecodedBody, block: usize) -> Self {
        let block = block.max(1);
        Input {
            block,
            reader: body.reader,
            info: body.info,
            buf: Vec::with_capacity(2 * block),
            start: 0,
            eof: false,
            lines: Lines { pos: 0, line: 1 },
        }
    }

    /// Drops the parsed bytes and reads at least one more block (or up to the end), or as
    /// many bytes as are held already when that is more: a long record is parsed again
    /// after each read, and doubling keeps that linear in its length (the reader's limits
    /// keep what is held small).
    pub async fn fill(&mut self, source: &str) -> Result<(), ExportError> {
        if self.start > 0 {
            self.lines.line_at(&self.buf, self.start);
            self.buf.drain(..self.start);
            self.lines.pos -= self.start;
            self.start = 0;
        }
        let want = self.buf.len() + self.block.max(self.buf.len());
        while !self.eof && self.buf.len() < want {
            self.buf.reserve(want - self.buf.len());
            match self.reader.read_buf(&mut self.buf).await {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) => return Err(self.info.classify(source, e)),
            }
        }
        Ok(())
    }

    /// The end of the parsable region: after the last line break (or the end of the body).
    /// `None` when the unconsumed bytes hold no line break yet and more may come.
    pub fn region_end(&self) -> Option<usize> {
        if self.eof {
            return Some(self.buf.len());
        }
        // The last byte is left out: a CR there may be the first half of a CRLF.
        let end = self.buf.len().saturating_sub(1).max(self.start);
        memchr::memrchr2(b'\n', b'\r', &self.buf[self.start..end]).map(|k| self.start + k + 1)
    }

    /// Whether nothing is left to parse.
    pub fn done(&self) -> bool {
        self.eof && self.start >= self.buf.len()
    }

    /// Whether the body's last byte is a line break (only meaningful at the end).
    pub fn ends_with_line_break(&self) -> bool {
        matches!(self.buf.last(), Some(b'\n' | b'\r'))
    }
}

impl Lines {
    /// The 1-based line number of `buf[pos]` (`pos` at or after the last asked position).
    pub fn line_at(&mut self, buf: &[u8], pos: usize) -> u64 {
        if pos > self.pos {
            let region = &buf[self.pos..pos];
            // CRLF counts once; a lone CR is a line end too.
            let lf = memchr::memchr_iter(b'\n', region).count() as u64;
            let base = self.pos;
            let cr_alone = memchr::memchr_iter(b'\r', region)
                .filter(|&i| buf.get(base + i + 1) != Some(&b'\n'))
                .count() as u64;
            self.line += lf + cr_alone;
            self.pos = pos;
        }
        self.line
    }
}
