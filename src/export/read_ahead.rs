//! A blocking reader (a local file, stdin) as a body stream, read ahead on a thread of its
//! own: the parser finds the next pieces already read when it wants them. (tokio's file
//! and stdin read only when polled, one blocking task per read, so the parser waited for
//! every read.) The thread stops when the stream is dropped.

use std::io::{self, Read};
use std::thread;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;

/// Bytes per piece read: below the allocator's mmap threshold (see `memory`), so pieces
/// come from the heap and reuse its pages instead of mapping fresh ones each time.
pub const READ_AHEAD_PIECE: usize = 128 * 1024;

/// Pieces read ahead of the parser.
const PIECES_AHEAD: usize = 8;

/// Streams everything `reader` yields, in pieces of up to 128 KiB (`READ_AHEAD_PIECE`),
/// ending after the first error.
pub fn read_ahead<R: Read + Send + 'static>(
    reader: R,
) -> io::Result<impl Stream<Item = io::Result<Bytes>> + Send + 'static> {
    let (tx, mut rx) = mpsc::channel(PIECES_AHEAD);
    thread::Builder::new()
        .name("cohort-sync-read".into())
        .spawn(move || pump(reader, tx))?;
    Ok(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

fn pump<R: Read>(mut reader: R, tx: mpsc::Sender<io::Result<Bytes>>) {
    loop {
        // `read_to_end` fills the piece (a pipe hands out a few KiB per read) without
        // zeroing it first, and retries interrupted reads.
        let mut piece = Vec::with_capacity(READ_AHEAD_PIECE);
        let read = reader
            .by_ref()
            .take(READ_AHEAD_PIECE as u64)
            .read_to_end(&mut piece);
        let last = piece.len() < READ_AHEAD_PIECE;
        // The bytes read before an error go first.
        if !piece.is_empty() && tx.blocking_send(Ok(Bytes::from(piece))).is_err() {
            return;
        }
        if let Err(e) = read {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    /// Hands out `data` a few bytes per read, failing once at the end if asked.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        fail_at_end: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                if self.fail_at_end {
                    self.fail_at_end = false;
                    return Err(io::Error::other("disk gone"));
                }
                return Ok(0);
            }
            let n = buf.len().min(7).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[tokio::test]
    async fn yields_every_byte_in_order_then_ends() {
        let data: Vec<u8> = (0..READ_AHEAD_PIECE * 2 + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let reader = Trickle {
            data: data.clone(),
            at: 0,
            fail_at_end: false,
        };
        let pieces: Vec<Bytes> = read_ahead(reader)
            .expect("thread")
            .map(|p| p.expect("piece"))
            .collect()
            .await;
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces.concat(), data);
    }

    #[tokio::test]
    async fn passes_a_read_error_on() {
        let reader = Trickle {
            data: b"a,b\n".to_vec(),
            at: 0,
            fail_at_end: true,
        };
        let items: Vec<io::Result<Bytes>> = read_ahead(reader).expect("thread").collect().await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(
            items[0].as_ref().ok().map(|b| &b[..]),
            Some(&b"a,b\n"[..]),
            "the bytes before the error are not lost"
        );
        let Err(e) = &items[1] else {
            panic!("expected the read error, got {items:?}");
        };
        assert_eq!(e.to_string(), "disk gone");
    }
}
