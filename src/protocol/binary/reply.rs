//! Binary responses: the request's opcode and opaque echoed, big-endian lengths.

use super::{status_text, Header, HEADER_LEN, RESPONSE};

/// Appends one response packet.
pub fn response(
    out: &mut Vec<u8>,
    req: &Header,
    status: u16,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) {
    let body = extras.len() + key.len() + value.len();
    out.reserve(HEADER_LEN + body);
    out.push(RESPONSE);
    out.push(req.opcode);
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.push(0);
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&req.opaque.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

/// Appends an error response carrying memcached's text for `status`.
pub fn error(out: &mut Vec<u8>, req: &Header, status: u16) {
    response(out, req, status, 0, &[], &[], status_text(status));
}

/// Appends a success response with no body.
pub fn ok(out: &mut Vec<u8>, req: &Header, cas: u64) {
    response(out, req, super::status::OK, cas, &[], &[], &[]);
}
