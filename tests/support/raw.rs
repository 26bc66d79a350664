//! A raw HTTP/2 frame server, for servers that misbehave.
//!
//! h2's server side always speaks correct HTTP/2, so it cannot play a
//! hostile peer: send GOAWAY debug data, floods, oversized header blocks,
//! invalid frames. This server does nothing by itself beyond reading the
//! client preface; each test scripts, frame by frame, what it does:
//!
//! ```ignore
//! let server = RawServer::start(|mut conn: RawConnection| async move {
//!     conn.handshake(&[]).await?;
//!     let stream = conn.next_request().await?;
//!     conn.send_headers(stream, &hpack(&[(":status", "200")]), true).await
//! })
//! .await;
//! ```
//!
//! Frames are read and written whole, one at a time, on one task per
//! connection: enough for scripts, and easy to follow.
#![allow(dead_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;

/// The 24 bytes every HTTP/2 client connection starts with (RFC 9113 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Every flow-control window starts here (RFC 9113 section 6.9.2).
pub const DEFAULT_WINDOW: i64 = 65_535;

/// Frame types (RFC 9113 section 6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    /// On DATA and HEADERS.
    pub const END_STREAM: u8 = 0x1;
    /// On SETTINGS and PING.
    pub const ACK: u8 = 0x1;
    /// On HEADERS and CONTINUATION.
    pub const END_HEADERS: u8 = 0x4;
}

/// SETTINGS identifiers.
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes (RFC 9113 section 7).
pub mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const INTERNAL_ERROR: u32 = 0x2;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// One frame as it came off the wire.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

impl Frame {
    pub fn has_flag(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The error code of a RST_STREAM or GOAWAY frame.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            kind::RST_STREAM => 0,
            kind::GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }

    /// The increment of a WINDOW_UPDATE frame.
    pub fn window_increment(&self) -> Option<u32> {
        if self.kind != kind::WINDOW_UPDATE {
            return None;
        }
        let bytes = self.payload.get(0..4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?) & 0x7fff_ffff)
    }
}

/// A listening raw server; stops accepting when dropped.
pub struct RawServer {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl RawServer {
    /// Listens on a free loopback port and runs `script` on every accepted
    /// connection, in a task of its own, once the client preface is read.
    /// The script's I/O errors (the client hung up) end only that connection.
    pub async fn start<F, Fut>(script: F) -> RawServer
    where
        F: Fn(RawConnection) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the raw server");
        let addr = listener.local_addr().expect("listener has an address");
        let accepted = Arc::new(AtomicU64::new(0));
        let counter = accepted.clone();
        let script = Arc::new(script);
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let index = counter.fetch_add(1, Ordering::SeqCst);
                let script = script.clone();
                tokio::spawn(async move {
                    let (read, write) = tcp.into_split();
                    let mut connection = RawConnection {
                        index,
                        reader: FrameReader {
                            read,
                            buf: BytesMut::new(),
                        },
                        writer: FrameWriter { write },
                        client_settings: Vec::new(),
                        connection_window: DEFAULT_WINDOW,
                    };
                    if connection.read_preface().await.is_ok() {
                        let _ = script(connection).await;
                    }
                });
            }
        });
        RawServer {
            addr,
            accepted,
            accept_task,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`, followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

/// One accepted connection, after the client preface.
///
/// Reading is here; writing is on its [`FrameWriter`], reached through
/// `Deref` (`conn.send_data(..)`). A script that must write while the
/// client writes too (a flood, whose answers would otherwise fill the socket
/// buffers and block both sides) takes the halves apart with
/// [`into_parts`](Self::into_parts).
pub struct RawConnection {
    index: u64,
    reader: FrameReader,
    writer: FrameWriter,
    /// The client's SETTINGS so far, as (identifier, value).
    client_settings: Vec<(u16, u32)>,
    /// How much DATA the client's connection window lets us send now.
    connection_window: i64,
}

impl RawConnection {
    /// 0 for the first connection the server accepted, 1 for the next...
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The reading and the writing half.
    pub fn into_parts(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }

    async fn read_preface(&mut self) -> io::Result<()> {
        let preface = self.reader.read_exact(PREFACE.len()).await?;
        if preface != PREFACE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not an HTTP/2 client preface",
            ));
        }
        Ok(())
    }

    /// The next frame, whatever it is. SETTINGS and connection-level
    /// WINDOW_UPDATEs are noted on the way, for scripts that honour flow
    /// control.
    pub async fn read_frame(&mut self) -> io::Result<Frame> {
        let frame = self.reader.read_frame().await?;
        match frame.kind {
            kind::SETTINGS if !frame.has_flag(flag::ACK) => {
                for setting in frame.payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([setting[0], setting[1]]);
                    let value =
                        u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
                    self.client_settings.push((id, value));
                }
            }
            kind::WINDOW_UPDATE if frame.stream_id == 0 => {
                self.connection_window += i64::from(frame.window_increment().unwrap_or(0));
            }
            _ => {}
        }
        Ok(frame)
    }

    /// The client's latest value for SETTINGS parameter `id`, if it sent one.
    pub fn client_setting(&self, id: u16) -> Option<u32> {
        self.client_settings
            .iter()
            .rev()
            .find(|(setting, _)| *setting == id)
            .map(|(_, value)| *value)
    }

    /// What the client's connection window lets us send now.
    pub fn connection_window(&self) -> i64 {
        self.connection_window
    }

    /// Sends DATA and charges it to the connection window (the caller keeps
    /// the stream's window).
    pub async fn send_data_counted(&mut self, stream: u32, data: &[u8]) -> io::Result<()> {
        self.connection_window -= data.len() as i64;
        self.writer.send_data(stream, data, false).await
    }

    /// The next frame that is not connection housekeeping: the client's
    /// SETTINGS are acknowledged and its PINGs answered on the way, as any
    /// server must, and acknowledgements of ours are skipped.
    pub async fn next_frame(&mut self) -> io::Result<Frame> {
        loop {
            let frame = self.read_frame().await?;
            if !self.answer_housekeeping(&frame).await? {
                return Ok(frame);
            }
        }
    }

    /// Answers a SETTINGS or PING frame; returns whether `frame` was one.
    pub async fn answer_housekeeping(&mut self, frame: &Frame) -> io::Result<bool> {
        match frame.kind {
            kind::SETTINGS if !frame.has_flag(flag::ACK) => self.writer.send_settings_ack().await?,
            kind::PING if !frame.has_flag(flag::ACK) => {
                self.writer.send_ping(true, &frame.payload).await?
            }
            kind::SETTINGS | kind::PING => {}
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The server's half of the handshake: sends our SETTINGS (`settings`
    /// may be empty), then acknowledges the client's. h2pool's handshake
    /// ends when it has both.
    pub async fn handshake(&mut self, settings: &[(u16, u32)]) -> io::Result<()> {
        self.writer.send_settings(settings).await?;
        loop {
            let frame = self.read_frame().await?;
            let clients_settings = frame.kind == kind::SETTINGS && !frame.has_flag(flag::ACK);
            self.answer_housekeeping(&frame).await?;
            if clients_settings {
                return Ok(());
            }
        }
    }

    /// Waits for the client's next request; returns its stream id. Frames
    /// in between (request bodies, WINDOW_UPDATEs) are dropped.
    pub async fn next_request(&mut self) -> io::Result<u32> {
        loop {
            let frame = self.next_frame().await?;
            if frame.kind == kind::HEADERS {
                return Ok(frame.stream_id);
            }
        }
    }

    /// Answers `stream` with 200 and `body`.
    pub async fn respond_ok(&mut self, stream: u32, body: &[u8]) -> io::Result<()> {
        let block = hpack(&[(":status", "200")]);
        self.writer
            .send_headers(stream, &block, body.is_empty())
            .await?;
        if !body.is_empty() {
            self.writer.send_data(stream, body, true).await?;
        }
        Ok(())
    }

    /// Closes the connection without losing what was sent: sends FIN, then
    /// reads until the client closes too. (Closing a socket with unread
    /// input sends a TCP reset, which may destroy a GOAWAY still in flight.)
    pub async fn close(self) {
        let RawConnection {
            reader, mut writer, ..
        } = self;
        let _ = writer.write.shutdown().await;
        reader.discard_all().await;
    }

    /// Answers requests with 200 `ok` until the client goes away.
    pub async fn serve_ok(&mut self) -> io::Result<()> {
        loop {
            let stream = self.next_request().await?;
            self.respond_ok(stream, b"ok").await?;
        }
    }
}

impl Deref for RawConnection {
    type Target = FrameWriter;

    fn deref(&self) -> &FrameWriter {
        &self.writer
    }
}

impl DerefMut for RawConnection {
    fn deref_mut(&mut self) -> &mut FrameWriter {
        &mut self.writer
    }
}

/// Reads whole frames.
pub struct FrameReader {
    read: OwnedReadHalf,
    buf: BytesMut,
}

impl FrameReader {
    async fn read_exact(&mut self, len: usize) -> io::Result<Bytes> {
        while self.buf.len() < len {
            if self.read.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.split_to(len).freeze())
    }

    /// The next frame; `UnexpectedEof` once the client closed.
    pub async fn read_frame(&mut self) -> io::Result<Frame> {
        // The 9-byte header: 24-bit length, type, flags, 31-bit stream id.
        let header = self.read_exact(9).await?;
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let stream_id =
            u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let payload = self.read_exact(len).await?;
        Ok(Frame {
            kind: header[3],
            flags: header[4],
            stream_id,
            payload,
        })
    }

    /// Reads and drops frames until the client closes: keeps the client's
    /// writes flowing while a script only writes.
    pub async fn discard_all(mut self) {
        while self.read_frame().await.is_ok() {}
    }
}

/// Writes frames.
pub struct FrameWriter {
    write: OwnedWriteHalf,
}

impl FrameWriter {
    /// Writes one frame: the 9-byte header, then `payload`.
    pub async fn send_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|len| *len < 1 << 24)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "frame payload over 2^24-1 bytes",
                )
            })?;
        let mut frame = BytesMut::with_capacity(9 + payload.len());
        frame.put_slice(&len.to_be_bytes()[1..]);
        frame.put_u8(kind);
        frame.put_u8(flags);
        frame.put_u32(stream & 0x7fff_ffff);
        frame.put_slice(payload);
        self.write.write_all(&frame).await
    }

    /// Writes bytes as they are, frames or not.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write.write_all(bytes).await
    }

    pub async fn send_settings(&mut self, settings: &[(u16, u32)]) -> io::Result<()> {
        let mut payload = BytesMut::new();
        for (id, value) in settings {
            payload.put_u16(*id);
            payload.put_u32(*value);
        }
        self.send_frame(kind::SETTINGS, 0, 0, &payload).await
    }

    pub async fn send_settings_ack(&mut self) -> io::Result<()> {
        self.send_frame(kind::SETTINGS, flag::ACK, 0, &[]).await
    }

    /// A HEADERS frame carrying the whole `block` (END_HEADERS set).
    pub async fn send_headers(
        &mut self,
        stream: u32,
        block: &[u8],
        end_stream: bool,
    ) -> io::Result<()> {
        let mut flags = flag::END_HEADERS;
        if end_stream {
            flags |= flag::END_STREAM;
        }
        self.send_frame(kind::HEADERS, flags, stream, block).await
    }

    /// A header block of any size: HEADERS, then as many CONTINUATIONs as
    /// frames of `max_frame` bytes need.
    pub async fn send_header_block(
        &mut self,
        stream: u32,
        block: &[u8],
        end_stream: bool,
        max_frame: usize,
    ) -> io::Result<()> {
        let mut chunks = block.chunks(max_frame.max(1)).peekable();
        let first = chunks.next().unwrap_or_default();
        let mut flags = if end_stream { flag::END_STREAM } else { 0 };
        if chunks.peek().is_none() {
            flags |= flag::END_HEADERS;
        }
        self.send_frame(kind::HEADERS, flags, stream, first).await?;
        while let Some(chunk) = chunks.next() {
            self.send_continuation(stream, chunk, chunks.peek().is_none())
                .await?;
        }
        Ok(())
    }

    pub async fn send_continuation(
        &mut self,
        stream: u32,
        fragment: &[u8],
        end_headers: bool,
    ) -> io::Result<()> {
        let flags = if end_headers { flag::END_HEADERS } else { 0 };
        self.send_frame(kind::CONTINUATION, flags, stream, fragment)
            .await
    }

    pub async fn send_data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
    ) -> io::Result<()> {
        let flags = if end_stream { flag::END_STREAM } else { 0 };
        self.send_frame(kind::DATA, flags, stream, data).await
    }

    pub async fn send_rst_stream(&mut self, stream: u32, code: u32) -> io::Result<()> {
        self.send_frame(kind::RST_STREAM, 0, stream, &code.to_be_bytes())
            .await
    }

    pub async fn send_goaway(
        &mut self,
        last_stream: u32,
        code: u32,
        debug_data: &[u8],
    ) -> io::Result<()> {
        let mut payload = BytesMut::with_capacity(8 + debug_data.len());
        payload.put_u32(last_stream & 0x7fff_ffff);
        payload.put_u32(code);
        payload.put_slice(debug_data);
        self.send_frame(kind::GOAWAY, 0, 0, &payload).await
    }

    /// A PING; `payload` should be 8 bytes (others are a protocol error).
    pub async fn send_ping(&mut self, ack: bool, payload: &[u8]) -> io::Result<()> {
        let flags = if ack { flag::ACK } else { 0 };
        self.send_frame(kind::PING, flags, 0, payload).await
    }

    /// A WINDOW_UPDATE; `stream` 0 is the connection's window.
    pub async fn send_window_update(&mut self, stream: u32, increment: u32) -> io::Result<()> {
        self.send_frame(kind::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
            .await
    }
}

/// Encodes a header block with HPACK's simplest representation: every field
/// a "literal header field without indexing, new name" (RFC 7541 6.2.2),
/// strings without Huffman coding. Any decoder must accept it, and it can
/// carry names and values that a real encoder would refuse.
pub fn hpack(fields: &[(&str, &str)]) -> Bytes {
    let mut block = BytesMut::new();
    for (name, value) in fields {
        block.put_u8(0x00);
        hpack_string(&mut block, name.as_bytes());
        hpack_string(&mut block, value.as_bytes());
    }
    block.freeze()
}

/// A string literal: H bit clear, length as a 7-bit-prefix integer, bytes.
fn hpack_string(block: &mut BytesMut, bytes: &[u8]) {
    hpack_integer(block, 0x00, 7, bytes.len());
    block.put_slice(bytes);
}

/// RFC 7541 5.1: values below 2^prefix-1 fit the prefix; larger ones fill
/// it and go on in 7-bit groups, least significant first.
fn hpack_integer(block: &mut BytesMut, first_byte_bits: u8, prefix: u32, value: usize) {
    let max_prefix = (1usize << prefix) - 1;
    if value < max_prefix {
        block.put_u8(first_byte_bits | value as u8);
        return;
    }
    block.put_u8(first_byte_bits | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        block.put_u8((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    block.put_u8(rest as u8);
}
