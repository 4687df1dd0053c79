//! Benchmark support: the XDP forwarding benchmark (test bench of network
//! namespaces, live-frame traffic generator, rtpengine as a userspace peer,
//! runner and reports).

pub mod bencode;
pub mod frame;
pub mod lab;
pub mod rtpengine;
pub mod sfu_search;
pub mod stop;
pub mod traffic;
pub mod xdp_bench;
