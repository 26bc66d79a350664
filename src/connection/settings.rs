use std::time::Duration;

/// HTTP/2 settings for the connections h2pool opens, with the defaults
/// hyper's HTTP/2 client uses where it has one.
///
/// ```
/// use h2pool::connection::Http2Settings;
///
/// let settings = Http2Settings::default()
///     .initial_stream_window_size(4 * 1024 * 1024)
///     .max_concurrent_streams(Some(64));
/// assert_eq!(settings.get_initial_stream_window_size(), 4 * 1024 * 1024);
/// ```
#[derive(Debug, Clone)]
pub struct Http2Settings {
    pub(crate) initial_stream_window_size: u32,
    pub(crate) initial_connection_window_size: u32,
    pub(crate) max_frame_size: u32,
    pub(crate) max_header_list_size: u32,
    pub(crate) max_concurrent_streams: Option<usize>,
    pub(crate) max_send_buffer_size: usize,
    pub(crate) handshake_timeout: Duration,
}

/// 2 MiB: large enough for a stream to fill a fast loopback or LAN link.
pub const DEFAULT_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// 5 MiB: a few streams at full speed before the connection window binds.
pub const DEFAULT_CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// 16 KiB, the protocol's initial and most common frame size.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16 * 1024;
/// 16 KiB of response headers at most, as hyper accepts.
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// 400 KiB buffered per stream before the body pump waits, as hyper.
pub const DEFAULT_MAX_SEND_BUFFER_SIZE: usize = 400 * 1024;
/// 10 s for the server's SETTINGS after the transport connects.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const MIN_FRAME_SIZE: u32 = 16 * 1024;
const MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
const MAX_WINDOW_SIZE: u32 = (1 << 31) - 1;
// h2's client builder asserts this bound.
const MAX_SEND_BUFFER_SIZE: usize = u32::MAX as usize;

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            initial_stream_window_size: DEFAULT_STREAM_WINDOW,
            initial_connection_window_size: DEFAULT_CONNECTION_WINDOW,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
            max_concurrent_streams: None,
            max_send_buffer_size: DEFAULT_MAX_SEND_BUFFER_SIZE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl Http2Settings {
    /// The receive window of each stream (SETTINGS_INITIAL_WINDOW_SIZE).
    /// Clamped to 1..=2^31-1. Default [`DEFAULT_STREAM_WINDOW`].
    pub fn initial_stream_window_size(mut self, size: u32) -> Self {
        self.initial_stream_window_size = size.clamp(1, MAX_WINDOW_SIZE);
        self
    }

    /// The receive window of the whole connection.
    /// Clamped to 1..=2^31-1. Default [`DEFAULT_CONNECTION_WINDOW`].
    pub fn initial_connection_window_size(mut self, size: u32) -> Self {
        self.initial_connection_window_size = size.clamp(1, MAX_WINDOW_SIZE);
        self
    }

    /// The largest frame the server may send (SETTINGS_MAX_FRAME_SIZE).
    /// Clamped to the protocol's 16 KiB..=16 MiB-1. Default [`DEFAULT_MAX_FRAME_SIZE`].
    pub fn max_frame_size(mut self, size: u32) -> Self {
        self.max_frame_size = size.clamp(MIN_FRAME_SIZE, MAX_FRAME_SIZE);
        self
    }

    /// The largest response header block accepted (SETTINGS_MAX_HEADER_LIST_SIZE;
    /// zero is taken as one). Default [`DEFAULT_MAX_HEADER_LIST_SIZE`].
    pub fn max_header_list_size(mut self, size: u32) -> Self {
        self.max_header_list_size = size.max(1);
        self
    }

    /// Our own cap on concurrent streams per connection, below the server's
    /// SETTINGS_MAX_CONCURRENT_STREAMS. `None` (the default) uses the server's.
    /// A cap of zero is taken as one.
    pub fn max_concurrent_streams(mut self, max: Option<usize>) -> Self {
        self.max_concurrent_streams = max.map(|max| max.max(1));
        self
    }

    /// How much request body h2 buffers per stream before the pump waits.
    /// Clamped to 1..=4 GiB-1 (h2 panics above). Default [`DEFAULT_MAX_SEND_BUFFER_SIZE`].
    pub fn max_send_buffer_size(mut self, size: usize) -> Self {
        self.max_send_buffer_size = size.clamp(1, MAX_SEND_BUFFER_SIZE);
        self
    }

    /// How long the HTTP/2 handshake may take. Default [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The receive window of each stream.
    pub fn get_initial_stream_window_size(&self) -> u32 {
        self.initial_stream_window_size
    }

    /// Our cap on concurrent streams per connection, if any.
    pub fn get_max_concurrent_streams(&self) -> Option<usize> {
        self.max_concurrent_streams
    }

    pub(crate) fn h2_builder(&self) -> h2::client::Builder {
        let mut builder = h2::client::Builder::new();
        builder
            .initial_window_size(self.initial_stream_window_size)
            .initial_connection_window_size(self.initial_connection_window_size)
            .max_frame_size(self.max_frame_size)
            .max_header_list_size(self.max_header_list_size)
            .max_send_buffer_size(self.max_send_buffer_size)
            .enable_push(false);
        builder
    }
}
