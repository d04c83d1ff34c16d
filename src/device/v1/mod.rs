//! Device protocol v1 over a serial byte link: framing ([`frame`]), messages ([`protocol`])
//! and the station's end ([`link::Link`]), which implements [`crate::device::Device`].
//! `docs/protocol.md` is the normative text for firmware.

pub mod frame;
pub mod link;
pub mod protocol;

pub use link::Link;
