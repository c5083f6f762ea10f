//! The host <-> guest protocol of IronClaw: the one source of truth for what
//! crosses into a sandbox.
//!
//! One byte stream (Unix socket, vsock or virtio-serial port) carries many
//! concurrent operations. A connection starts with a line-based handshake
//! ([`handshake`]) that also resynchronises streams that may hold stale bytes
//! (a virtio-serial port keeps what the guest wrote while no host was
//! connected). After it, both sides exchange [`frame`]s: a stream id plus one
//! message. The host opens streams (ids it picks, never reused on a
//! connection); the guest answers on the same id.

pub mod boot;
pub mod flow;
pub mod fragment;
pub mod frame;
pub mod handshake;
pub mod msg;

pub use flow::{RecvWindow, SendWindow, MAX_WINDOW, WINDOW};
pub use fragment::{fragments, Reassembler, MAX_MESSAGE};
pub use frame::{
    body_len, encode, encode_with_bytes, FrameError, FrameReader, FrameWriter, HEADER, MAX_FRAME,
};
pub use handshake::{HandshakeError, PROTOCOL_VERSION};
pub use msg::*;

/// Largest data chunk either side puts in one frame. Kept well under
/// [`MAX_FRAME`] so the envelope always fits.
pub const CHUNK: usize = 64 * 1024;

/// Host uids/gids in one namespace sandbox's user namespace: ids 0..this
/// inside map to the sandbox's own block on the host. Host and guest
/// (ns-init writes the maps) must agree on it.
pub const IDS_PER_SANDBOX: u32 = 65_536;

/// Longest error message either side puts on the wire; longer ones are cut
/// (they echo paths and command names the host sent, which can be huge).
pub const MAX_ERROR: usize = 4096;

/// Cut `s` to at most `max` bytes at a character boundary, marking the cut.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str("...");
}
