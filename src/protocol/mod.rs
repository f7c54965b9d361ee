//! Pure parsing and encoding of memcached's protocols: bytes in, commands out; outcomes in,
//! bytes out. No sockets, no tokio, no store, no server: this layer has its own vocabulary
//! ([`command`]), which the server maps to the store's.
//!
//! Every encoding parses into the same logical [`Command`]s and renders the same outcomes
//! through its own [`Reply`]: [`text`] (`TextReply`: noreply), [`meta`] (`MetaReply`: the
//! flags to echo, `q`, `k`, `O`, `b`) and [`binary`] (`BinaryReply`: header, opaque, quiet).
//!
//! A parse answers one of three things ([`Parsed`]): a request and how many bytes it used,
//! "need more" (the normal case while a request is still arriving, not an error), or an
//! error that knows memcached's exact reply and what the connection does next. Requests
//! borrow from the read buffer, so parsing allocates nothing in the common case.
//!
//! Meta commands are text lines too, so the text parser hands `m?` verbs to [`meta`].

pub mod binary;
pub mod command;
pub mod limits;
pub mod meta;
pub mod number;
pub mod text;

pub use command::{Cas, Command, Exptime, Reply, SetMode};
pub use limits::Limits;
pub use meta::MetaRequest;

/// The result of trying to parse one request from the front of a buffer.
#[derive(Debug)]
pub enum Parsed<'a> {
    /// A request, and the bytes it used.
    Done(Request<'a>, usize),
    /// Not a whole request yet; read more and try again. `whole` is the length the request
    /// will have, once its header has told (a storage request waiting for its value).
    Incomplete { whole: Option<usize> },
    /// The bytes are wrong; the error says what to answer and what to skip.
    Invalid(ProtocolError),
}

/// A text-protocol line: a text command with how to answer it, or a meta command.
#[derive(Debug)]
pub enum Request<'a> {
    Text(Command<'a>, text::reply::TextReply),
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
