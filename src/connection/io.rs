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
    /// It also follows the server's frame headers (not their payloads), for
    /// two frames h2 does not report:
    /// - GOAWAY: h2 ends a connection the same way after GOAWAY(NO_ERROR)
    ///   and after a bare close, and only the first is a graceful end that
    ///   says how many streams the server takes per connection.
    /// - SETTINGS: the server's stream limit may have changed. h2 applies
    ///   a SETTINGS before it decodes another frame, so by the next read
    ///   it has: the connection's task then reads the limit (under h2's
    ///   lock, which it need not take on every turn).
    pub(crate) struct Watched<IO> {
        #[pin]
        io: IO,
        handle: ConnectionHandle,
        frames: FrameHeaders,
        // A SETTINGS came in with the last bytes read.
        settings_read: bool,
    }
}

impl<IO> Watched<IO> {
    pub(crate) fn new(io: IO, handle: ConnectionHandle) -> Self {
        Watched {
            io,
            handle,
            frames: FrameHeaders::default(),
            settings_read: false,
        }
    }
}

/// HTTP/2 frame types (RFC 9113, section 6) and the ACK flag.
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
/// Every frame starts with a 9-byte header (RFC 9113, section 4.1).
const FRAME_HEADER_LEN: usize = 9;

/// The frames of interest that a run of bytes held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    goaway: bool,
    settings: bool,
}

/// Where the byte stream from the server is among its frames: a frame
/// header cut across reads is put together here, and a payload skipped.
#[derive(Debug, Default)]
struct FrameHeaders {
    header: [u8; FRAME_HEADER_LEN],
    header_filled: usize,
    payload_left: usize,
    // The frame whose payload is being skipped is a SETTINGS: it counts
    // once it is whole, for only then can h2 decode and apply it.
    in_settings: bool,
}

impl FrameHeaders {
    /// Follows `bytes`, the next ones read. A GOAWAY is seen with its
    /// header, a SETTINGS once all of it is in. (A server breaking the
    /// framing is h2's to catch; this may only miss a frame then.)
    fn follow(&mut self, mut bytes: &[u8]) -> Seen {
        let mut seen = Seen::default();
        loop {
            if self.payload_left > bytes.len() {
                self.payload_left -= bytes.len();
                return seen;
            }
            bytes = &bytes[self.payload_left..];
            self.payload_left = 0;
            seen.settings |= std::mem::take(&mut self.in_settings);
            if bytes.is_empty() {
                return seen;
            }
            let header = if self.header_filled == 0 && bytes.len() >= FRAME_HEADER_LEN {
                // Most headers arrive whole: read them in place.
                let (header, rest) = bytes.split_at(FRAME_HEADER_LEN);
                bytes = rest;
                header
            } else {
                let taken = (FRAME_HEADER_LEN - self.header_filled).min(bytes.len());
                let (part, rest) = bytes.split_at(taken);
                self.header[self.header_filled..self.header_filled + taken].copy_from_slice(part);
                self.header_filled += taken;
                bytes = rest;
                if self.header_filled < FRAME_HEADER_LEN {
                    return seen;
                }
                self.header_filled = 0;
                &self.header[..]
            };
            if let [a, b, c, kind, flags, ..] = *header {
                self.payload_left = u32::from_be_bytes([0, a, b, c]) as usize;
                seen.goaway |= kind == GOAWAY;
                self.in_settings = kind == SETTINGS && flags & ACK == 0;
            }
        }
    }
}

impl<IO: AsyncRead> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if std::mem::take(this.settings_read) {
            // h2 reads again only once it has applied what it read before.
            this.handle.note_settings_applied();
        }
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if let Some(read) = buf.filled().get(before..).filter(|read| !read.is_empty()) {
            this.handle.heard_from_server();
            let seen = this.frames.follow(read);
            if seen.goaway {
                this.handle.note_goaway_received();
            }
            *this.settings_read = seen.settings;
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
    use super::{FrameHeaders, Seen};

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let length = (payload.len() as u32).to_be_bytes();
        let mut frame = vec![length[1], length[2], length[3], kind, flags, 0, 0, 0, 1];
        frame.extend_from_slice(payload);
        frame
    }

    /// Where, in reads of `cut` bytes, each frame of interest was seen.
    fn seen_at(stream: &[u8], cut: usize) -> (Option<usize>, Option<usize>) {
        let mut frames = FrameHeaders::default();
        let (mut goaway, mut settings) = (None, None);
        for (index, chunk) in stream.chunks(cut).enumerate() {
            let seen = frames.follow(chunk);
            if seen.goaway && goaway.is_none() {
                goaway = Some(index * cut);
            }
            if seen.settings && settings.is_none() {
                settings = Some(index * cut);
            }
        }
        (goaway, settings)
    }

    #[test]
    fn goaway_and_settings_are_found_wherever_the_reads_cut_the_frames() {
        let mut stream = frame(0x4, 0x1, &[]); // a SETTINGS ACK: not news
        stream.extend(frame(0x0, 0, &[0x7; 100])); // DATA whose bytes look like frames
        stream.extend(frame(0x1, 0x4, &[0x4; 9])); // HEADERS
        let settings_at = stream.len();
        stream.extend(frame(0x4, 0, &[0; 6])); // SETTINGS
        stream.extend(frame(0x0, 0, &[])); // an empty DATA
        let goaway_at = stream.len();
        stream.extend(frame(0x7, 0, &[0; 8]));
        for cut in 1..=stream.len() {
            let (goaway, settings) = seen_at(&stream, cut);
            // A GOAWAY is seen in the read that completes its header, a
            // SETTINGS in the one that completes its payload (6 bytes).
            for (name, last_byte, found) in [
                ("GOAWAY", goaway_at + 8, goaway),
                ("SETTINGS", settings_at + 8 + 6, settings),
            ] {
                let found = found.unwrap_or_else(|| panic!("reads of {cut}: no {name}"));
                assert!(
                    found <= last_byte && last_byte < found + cut,
                    "reads of {cut}: {name} found in the read at {found}, its last byte is at {last_byte}"
                );
            }
        }
        let mut frames = FrameHeaders::default();
        assert_eq!(
            frames.follow(&stream[..settings_at]),
            Seen::default(),
            "nothing before them"
        );
        let mut frames = FrameHeaders::default();
        let empty_settings = frames.follow(&frame(0x4, 0, &[]));
        assert!(
            empty_settings.settings,
            "an empty SETTINGS is whole with its header"
        );
    }
}
