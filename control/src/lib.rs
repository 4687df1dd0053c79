//! switchboard's control plane: configuration, the HTTP API (consults,
//! WHIP/WHEP, admin), WebRTC signaling (SDP, ICE-lite, DTLS-SRTP), the
//! overload ladder, metrics, the audit log and the seam to the media plane.
//!
//! Every protocol module here is sans-IO: fed bytes and time, returning bytes,
//! events and deadlines, so it is tested without sockets and can be driven by
//! the media workers that own the UDP ports.

pub mod api;
pub mod audit;
pub mod cascade;
pub mod cluster;
pub mod config;
pub mod drain;
pub mod dtls;
pub mod ice;
pub mod media;
pub mod metrics;
pub mod overload;
pub mod participant;
pub mod placement;
pub mod plan;
pub mod pool;
pub mod sdp;
pub mod server;
pub mod session;
pub mod token;
pub mod web;
