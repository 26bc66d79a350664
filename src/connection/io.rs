//! The connection's transport, as its task reads and writes it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::handle::ConnectionHandle;

pin_project! {
    /// The transport under h2, noting every read that brings bytes as news
    /// from the server, for the keep-alive: any frame shows the server is
    /// alive (a PONG, a SETTINGS, a response on any stream), and one note per
    /// read rather than per frame keeps the clock off each request's path.
    ///
    /// It also follows the server's frame headers, to note a GOAWAY: h2 ends
    /// a connection the same way after GOAWAY(NO_ERROR) and after a bare
    /// close, and only the first is a graceful end that says how many
    /// streams the server takes per connection.
    pub(crate) struct Watched<IO> {
        #[pin]
        io: IO,
        handle: ConnectionHandle,
        frames: FrameHeaders,
    }
}

impl<IO> Watched<IO> {
    pub(crate) fn new(io: IO, handle: ConnectionHandle) -> Self {
        Watched {
            io,
            handle,
            frames: FrameHeaders::default(),
        }
    }
}

/// HTTP/2 frame type of GOAWAY (RFC 9113, section 6.8).
const GOAWAY: u8 = 0x7;
/// Every frame starts with a 9-byte header (RFC 9113, section 4.1).
const FRAME_HEADER_LEN: usize = 9;

/// Where the byte stream from the server is among its frames: a frame
/// header cut across reads is put together here, and a payload skipped.
#[derive(Debug, Default)]
struct FrameHeaders {
    header: [u8; FRAME_HEADER_LEN],
    header_filled: usize,
    payload_left: usize,
}

impl FrameHeaders {
    /// Follows `bytes`, the next ones read; returns whether a GOAWAY frame
    /// header was among them. (A server breaking the framing is h2's to
    /// catch; this only ever misses a GOAWAY then.)
    fn saw_goaway(&mut self, mut bytes: &[u8]) -> bool {
        let mut goaway = false;
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skipped = self.payload_left.min(bytes.len());
                self.payload_left -= skipped;
                bytes = &bytes[skipped..];
                continue;
            }
            let taken = (FRAME_HEADER_LEN - self.header_filled).min(bytes.len());
            let (head, rest) = bytes.split_at(taken);
            self.header[self.header_filled..self.header_filled + taken].copy_from_slice(head);
            self.header_filled += taken;
            bytes = rest;
            if self.header_filled == FRAME_HEADER_LEN {
                self.header_filled = 0;
                let [a, b, c, kind, ..] = self.header;
                self.payload_left = u32::from_be_bytes([0, a, b, c]) as usize;
                goaway |= kind == GOAWAY;
            }
        }
        goaway
    }
}

impl<IO: AsyncRead> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if let Some(read) = buf.filled().get(before..).filter(|read| !read.is_empty()) {
            this.handle.heard_from_server();
            if this.frames.saw_goaway(read) {
                this.handle.note_goaway_received();
            }
        }
        polled
    }
}

impl<IO: AsyncWrite> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::FrameHeaders;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let length = (payload.len() as u32).to_be_bytes();
        let mut frame = vec![length[1], length[2], length[3], kind, 0, 0, 0, 0, 1];
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn a_goaway_is_found_wherever_the_reads_cut_the_frames() {
        let mut stream = frame(0x4, &[0; 12]); // SETTINGS
        stream.extend(frame(0x0, &[0x7; 100])); // DATA whose bytes look like GOAWAY
        stream.extend(frame(0x1, &[0x7; 9])); // HEADERS
        let goaway_at = stream.len();
        stream.extend(frame(0x7, &[0; 8]));
        for cut in 1..=stream.len() {
            let mut frames = FrameHeaders::default();
            let mut found_at = None;
            for (index, chunk) in stream.chunks(cut).enumerate() {
                if frames.saw_goaway(chunk) && found_at.is_none() {
                    found_at = Some(index * cut);
                }
            }
            // Found in the read that completes its header.
            let header_end = goaway_at + 8;
            let found_at = found_at.expect("the GOAWAY is found");
            assert!(
                found_at <= header_end && header_end < found_at + cut,
                "reads of {cut}: found in the read at {found_at}, the header ends at {header_end}"
            );
        }
        let mut frames = FrameHeaders::default();
        assert!(
            !frames.saw_goaway(&stream[..goaway_at]),
            "no GOAWAY before it"
        );
    }
}
