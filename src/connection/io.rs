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
    /// It also follows the server's frame headers (skipping the payloads,
    /// all but the start of a GOAWAY's), for two frames h2 does not report:
    /// - GOAWAY: no new stream may start, and h2 tells only the request
    ///   that tries one. A connection at its stream limit gets no such
    ///   request, so the read drains it, waking the requests that wait for
    ///   a slot. Also, h2 ends a connection the same way after
    ///   GOAWAY(NO_ERROR) and after a bare close, and only the first is a
    ///   graceful end that says how many streams the server takes per
    ///   connection.
    /// - SETTINGS: the server's stream limit may have changed. h2 applies
    ///   a SETTINGS before it decodes another frame, so by the next read
    ///   it has: the connection's task then reads the limit (under h2's
    ///   lock, which it need not take on every turn). Likewise for the
    ///   server's ACK of our SETTINGS, which the handshake waits for.
    pub(crate) struct Watched<IO> {
        #[pin]
        io: IO,
        handle: ConnectionHandle,
        frames: FrameHeaders,
        // A SETTINGS came in with the last bytes read.
        settings_read: bool,
        // So did the ACK of ours.
        settings_ack_read: bool,
    }
}

impl<IO> Watched<IO> {
    pub(crate) fn new(io: IO, handle: ConnectionHandle) -> Self {
        Watched {
            io,
            handle,
            frames: FrameHeaders::default(),
            settings_read: false,
            settings_ack_read: false,
        }
    }
}

/// HTTP/2 frame types (RFC 9113, section 6) and the ACK flag.
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
/// Every frame starts with a 9-byte header (RFC 9113, section 4.1).
const FRAME_HEADER_LEN: usize = 9;

/// The frames of interest that a run of bytes completed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// What it said is in [`FrameHeaders::take_goaway`].
    goaway: bool,
    settings: bool,
    settings_ack: bool,
}

/// What a GOAWAY said, besides its last stream id (which h2 acts on).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct GoAwaySeen {
    pub(crate) code: u32,
    /// The start of its debug data ("too_many_pings", say), for people.
    pub(crate) debug_data: Vec<u8>,
}

/// Where the byte stream from the server is among its frames: a frame
/// header cut across reads is put together here, and a payload skipped.
#[derive(Debug, Default)]
struct FrameHeaders {
    header: [u8; FRAME_HEADER_LEN],
    header_filled: usize,
    payload_left: usize,
    // The frame whose payload is being read, if it is one of interest. It
    // counts once it is whole, for only then can h2 decode it.
    in_frame: Interest,
    // The start of the last GOAWAY's payload: the last stream id and the
    // error code, then debug data.
    goaway_start: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Interest {
    #[default]
    None,
    Settings,
    SettingsAck,
    GoAway,
}

/// Where a GOAWAY's error code ends in its payload.
const GOAWAY_CODE_END: usize = 8;
/// How much of a GOAWAY's payload is kept: the debug data is for logs and
/// errors, and a server may send up to 16 MiB of it.
const GOAWAY_KEPT: usize = GOAWAY_CODE_END + 256;

impl FrameHeaders {
    /// Follows `bytes`, the next ones read. A GOAWAY or a SETTINGS is seen
    /// once all of it is in. (A server breaking the framing is h2's to
    /// catch; this may only miss a frame then.)
    fn follow(&mut self, mut bytes: &[u8]) -> Seen {
        let mut seen = Seen::default();
        loop {
            let payload = self.payload_left.min(bytes.len());
            if self.in_frame == Interest::GoAway {
                let wanted = GOAWAY_KEPT
                    .saturating_sub(self.goaway_start.len())
                    .min(payload);
                self.goaway_start.extend_from_slice(&bytes[..wanted]);
            }
            bytes = &bytes[payload..];
            self.payload_left -= payload;
            if self.payload_left > 0 {
                return seen;
            }
            match std::mem::take(&mut self.in_frame) {
                Interest::None => {}
                Interest::Settings => seen.settings = true,
                Interest::SettingsAck => seen.settings_ack = true,
                Interest::GoAway => seen.goaway = true,
            }
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
                self.in_frame = match kind {
                    SETTINGS if flags & ACK == 0 => Interest::Settings,
                    SETTINGS => Interest::SettingsAck,
                    GOAWAY => {
                        self.goaway_start.clear();
                        Interest::GoAway
                    }
                    _ => Interest::None,
                };
            }
        }
    }

    /// What the last GOAWAY [`follow`](Self::follow) saw said. `None` for
    /// one too short for an error code: malformed, and h2 ends the
    /// connection.
    fn take_goaway(&mut self) -> Option<GoAwaySeen> {
        let start = std::mem::take(&mut self.goaway_start);
        let (&[_, _, _, _, a, b, c, d], debug_data) =
            start.split_first_chunk::<GOAWAY_CODE_END>()?;
        Some(GoAwaySeen {
            code: u32::from_be_bytes([a, b, c, d]),
            debug_data: debug_data.to_vec(),
        })
    }
}

impl<IO: AsyncRead> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        // h2 reads again only once it has applied what it read before.
        if std::mem::take(this.settings_read) {
            this.handle.note_settings_applied();
        }
        if std::mem::take(this.settings_ack_read) {
            this.handle.note_settings_acked();
        }
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if let Some(read) = buf.filled().get(before..).filter(|read| !read.is_empty()) {
            this.handle.heard_from_server();
            let seen = this.frames.follow(read);
            if let Some(goaway) = seen.goaway.then(|| this.frames.take_goaway()).flatten() {
                this.handle.note_goaway_received(goaway);
            }
            *this.settings_read = seen.settings;
            *this.settings_ack_read = seen.settings_ack;
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
    use super::{FrameHeaders, GoAwaySeen, Seen, GOAWAY_KEPT};

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
        let mut stream = frame(0x4, 0x1, &[]); // a SETTINGS ACK
        stream.extend(frame(0x0, 0, &[0x7; 100])); // DATA whose bytes look like frames
        stream.extend(frame(0x1, 0x4, &[0x4; 9])); // HEADERS
        let settings_at = stream.len();
        stream.extend(frame(0x4, 0, &[0; 6])); // SETTINGS
        stream.extend(frame(0x0, 0, &[])); // an empty DATA
        let goaway_at = stream.len();
        stream.extend(frame(0x7, 0, &[0, 0, 0, 7, 0, 0, 0, 0xb, b'b', b'y', b'e']));
        for cut in 1..=stream.len() {
            let (goaway, settings) = seen_at(&stream, cut);
            // Each is seen in the read that completes it.
            for (name, last_byte, found) in [
                ("GOAWAY", goaway_at + 8 + 11, goaway),
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
            Seen {
                settings_ack: true,
                ..Seen::default()
            },
            "only the ACK before them: no news of the server's own settings"
        );
        for cut in 1..=stream.len() {
            let mut frames = FrameHeaders::default();
            let goaways: Vec<_> = stream
                .chunks(cut)
                .filter_map(|chunk| {
                    let seen = frames.follow(chunk);
                    seen.goaway.then(|| frames.take_goaway()).flatten()
                })
                .collect();
            let expected = GoAwaySeen {
                code: 0xb,
                debug_data: b"bye".to_vec(),
            };
            assert_eq!(goaways, [expected], "reads of {cut}: what the GOAWAY said");
        }
        let mut frames = FrameHeaders::default();
        frames.follow(&frame(0x7, 0, &[0, 0, 0, 7]));
        assert_eq!(
            frames.take_goaway(),
            None,
            "a GOAWAY too short for an error code is h2's to refuse"
        );
        let mut frames = FrameHeaders::default();
        frames.follow(&frame(0x7, 0, &[b'x'; 100_000]));
        let long = frames.take_goaway();
        assert_eq!(
            long.map(|goaway| goaway.debug_data.len()),
            Some(GOAWAY_KEPT - 8),
            "the debug data kept is bounded"
        );
        let mut frames = FrameHeaders::default();
        let empty_settings = frames.follow(&frame(0x4, 0, &[]));
        assert!(
            empty_settings.settings,
            "an empty SETTINGS is whole with its header"
        );
    }
}
