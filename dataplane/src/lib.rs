//! switchboard's media core.
//!
//! Everything here except [`xdp`] is sans-IO: state machines fed bytes and
//! time that return packets and timers, testable without sockets. Packet views
//! in [`wire`] are zero-copy wrappers over byte slices with checked accessors;
//! malformed input yields a typed error and never a panic.

pub mod layer;
pub mod rewrite;
pub mod sfu;
pub mod srtp;
pub mod wire;
#[cfg(target_os = "linux")]
pub mod worker;

#[cfg(feature = "xdp")]
pub mod xdp;
