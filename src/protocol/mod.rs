//! Pure parsing and encoding of memcached's protocols: bytes in, requests out; outcomes in,
//! bytes out. No sockets, no tokio, no store.
//!
//! A parse answers one of three things ([`Parsed`]): a request and how many bytes it used,
//! "need more" (the normal case while a request is still arriving, not an error), or an
//! error that knows memcached's exact reply and what the connection does next. Requests
//! borrow from the read buffer, so parsing allocates nothing in the common case.
//!
//! Meta commands are text lines too, so the text parser hands `m?` verbs to [`meta`].

pub mod binary;
pub mod limits;
pub mod meta;
pub mod number;
pub mod text;

use crate::store::SetMode;
pub use limits::Limits;
pub use meta::MetaRequest;

/// The result of trying to parse one request from the front of a buffer.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A request, and the bytes it used.
    Done(Request<'a>, usize),
    /// Not a whole request yet; read more and try again.
    Incomplete,
    /// The bytes are wrong; the error says what to answer and what to skip.
    Invalid(ProtocolError),
}

/// Retrieval verbs: get, gets, gat, gats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetKind {
    pub cas: bool,
    pub touch: bool,
}

/// A request in the text protocol (meta requests are carried inside).
#[derive(Debug)]
pub enum Request<'a> {
    /// get/gets/gat/gats; `keys` is the space-separated key list, already validated.
    Get {
        kind: GetKind,
        exptime: i32,
        keys: &'a [u8],
    },
    /// set/add/replace/append/prepend/cas, with its data block.
    Store {
        mode: SetMode,
        key: &'a [u8],
        flags: u32,
        exptime: i32,
        data: &'a [u8],
        cas: Option<u64>,
        noreply: bool,
    },
    /// A storage command whose data block exceeds `-I`: answer the error, skip `swallow`
    /// bytes, and (for set) drop the old value so stale data does not linger.
    TooLarge {
        mode: SetMode,
        key: &'a [u8],
        swallow: usize,
        noreply: bool,
        meta: Option<MetaRequest<'a>>,
    },
    Delete {
        key: &'a [u8],
        noreply: bool,
    },
    Arith {
        key: &'a [u8],
        incr: bool,
        delta: u64,
        noreply: bool,
    },
    Touch {
        key: &'a [u8],
        exptime: i32,
        noreply: bool,
    },
    /// `flush_all [delay]`; `delay` is None if it was not a number (memcached still counts
    /// the command before refusing it).
    FlushAll {
        delay: Option<i32>,
        noreply: bool,
    },
    Verbosity {
        level: u32,
        noreply: bool,
    },
    CacheMemlimit {
        megabytes: u32,
        noreply: bool,
    },
    /// `stats [group [arg]]`
    Stats {
        group: &'a [u8],
        arg: &'a [u8],
    },
    Version,
    Quit,
    /// `shutdown [graceful]`; `graceful` is None for an unknown mode (answered only once
    /// `-A` has allowed shutdown at all, as memcached does).
    Shutdown {
        graceful: Option<bool>,
    },
    /// `stats cachedump <class> <limit>`: up to `limit` items (0: no limit) of a class.
    Cachedump {
        class: u32,
        limit: u32,
    },
    /// `lru_crawler metadump <classes>`: one line per live item; `all` is false when the
    /// class list names only classes this server does not have (see [`text::misc::dump_classes`]).
    Metadump {
        all: bool,
    },
    /// Admin commands we accept for compatibility with a fixed answer (`lru_crawler`, …).
    Fixed {
        reply: &'static [u8],
    },
    Meta(MetaRequest<'a>),
}

/// What the connection does after sending an error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// Close after the reply.
    Close,
}

/// Every way a request can be wrong, with memcached's reply for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    UnknownCommand,
    BadFormat,
    BadDataChunk,
    InvalidExptime,
    InvalidDelta,
    DeleteUsage,
    ShutdownMode,
    LineTooLong,
    /// An HTTP request line: memcached closes without a word.
    Http,
    MetaDuplicateFlag,
    MetaInvalidOrDuplicateFlag,
    MetaKeyDecode,
    MetaBadToken,
    MetaModeLength,
    MetaInitial,
    MetaDelta,
    MetaInvalidFlag,
    MetaGetTooManyFlags,
    MetaTooManyFlags,
    MetaOpaqueTooLong,
    MetaSetMode,
    MetaArithMode,
}

impl ErrorKind {
    /// The reply line, without CRLF; static, so answering an error allocates nothing.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::UnknownCommand => "ERROR",
            ErrorKind::BadFormat => "CLIENT_ERROR bad command line format",
            ErrorKind::BadDataChunk => "CLIENT_ERROR bad data chunk",
            ErrorKind::InvalidExptime => "CLIENT_ERROR invalid exptime argument",
            ErrorKind::InvalidDelta => "CLIENT_ERROR invalid numeric delta argument",
            ErrorKind::DeleteUsage => {
                "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]"
            }
            ErrorKind::ShutdownMode => "CLIENT_ERROR invalid shutdown mode",
            ErrorKind::LineTooLong => "CLIENT_ERROR line too long",
            ErrorKind::Http => "",
            ErrorKind::MetaDuplicateFlag => "CLIENT_ERROR duplicate flag",
            ErrorKind::MetaInvalidOrDuplicateFlag => "CLIENT_ERROR invalid or duplicate flag",
            ErrorKind::MetaKeyDecode => "CLIENT_ERROR error decoding key",
            ErrorKind::MetaBadToken => "CLIENT_ERROR bad token in command line format",
            ErrorKind::MetaModeLength => "CLIENT_ERROR incorrect length for M token",
            ErrorKind::MetaInitial => "CLIENT_ERROR invalid numeric initial value",
            ErrorKind::MetaDelta => "CLIENT_ERROR invalid numeric delta value",
            ErrorKind::MetaInvalidFlag => "CLIENT_ERROR invalid flag",
            ErrorKind::MetaGetTooManyFlags => "CLIENT_ERROR options flags are too long",
            ErrorKind::MetaTooManyFlags => "CLIENT_ERROR options flags too long",
            ErrorKind::MetaOpaqueTooLong => "CLIENT_ERROR opaque token too long",
            ErrorKind::MetaSetMode => "CLIENT_ERROR invalid mode for ms M token",
            ErrorKind::MetaArithMode => "CLIENT_ERROR invalid mode for ma M token",
        }
    }

    pub fn next(&self) -> Next {
        match self {
            ErrorKind::LineTooLong | ErrorKind::Http => Next::Close,
            _ => Next::Continue,
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for ErrorKind {}

/// A request that could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolError {
    pub kind: ErrorKind,
    /// Bytes of the bad request to drop.
    pub consumed: usize,
    /// Further bytes to skip once they arrive (a data block announced by a bad request).
    pub swallow: usize,
    /// The client asked for no reply; memcached then stays silent even about errors
    /// (except for meta commands, which always report errors).
    pub noreply: bool,
}

impl ProtocolError {
    pub fn new(kind: ErrorKind, consumed: usize) -> Self {
        ProtocolError {
            kind,
            consumed,
            swallow: 0,
            noreply: false,
        }
    }

    /// Appends the reply line to `out`, or nothing when closing silently or noreply.
    pub fn write_reply(&self, out: &mut Vec<u8>) {
        if self.noreply || matches!(self.kind, ErrorKind::Http | ErrorKind::LineTooLong) {
            return;
        }
        out.extend_from_slice(self.kind.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}
