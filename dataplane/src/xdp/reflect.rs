//! Loaders for the benchmark's programs: the bare reflector the relay is
//! measured against, the live-frame traffic generator and the counting sink.
//! The appliance never loads these; the benchmark runner does.

use std::time::Duration;

use aya::{
    maps::{Array, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions},
    Ebpf,
};
use switchboard_common::{
    map_names, program_names, GenPace, GenTemplate, SinkConfig, SinkCounters, GEN_HEAD_LEN,
};

use super::{attach_xdp, load_object, xdp_program, AttachedMode, XdpError};

/// Most frames one live-frame batch may hold (the kernel's `TEST_XDP_MAX_BATCH`).
pub const MAX_LIVE_BATCH: u32 = 256;

/// Smallest frame the generator accepts: it rewrites the first
/// [`GEN_HEAD_LEN`] bytes and the RTP sequence number after them.
pub const MIN_GENERATED_FRAME: usize = GEN_HEAD_LEN + 12;

/// One XDP program of the embedded object, attached to one interface and
/// detached on drop.
struct Attached {
    ebpf: Ebpf,
    program: &'static str,
    interface: String,
    link: Option<aya::programs::xdp::XdpLinkId>,
    mode: AttachedMode,
}

impl Attached {
    fn new(program: &'static str, interface: &str) -> Result<Self, XdpError> {
        let mut ebpf = load_object()?;
        let xdp = xdp_program(&mut ebpf, program)?;
        xdp.load().map_err(|source| XdpError::Program {
            what: format!("verifying {program}"),
            source,
        })?;
        let (link, mode) = attach_xdp(xdp, interface)?;
        Ok(Self {
            ebpf,
            program,
            interface: interface.to_owned(),
            link: Some(link),
            mode,
        })
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        let Some(link) = self.link.take() else { return };
        let result = xdp_program(&mut self.ebpf, self.program).and_then(|p| {
            p.detach(link).map_err(|source| XdpError::Program {
                what: format!("detaching {} from {}", self.program, self.interface),
                source,
            })
        });
        if let Err(err) = result {
            tracing::error!(%err, "detaching a benchmark XDP program failed");
        }
    }
}

/// The bare XDP reflector: swaps Ethernet, IP and UDP source and destination
/// of every UDP frame and sends it back with `XDP_TX`. The least work an XDP
/// forwarder can do, so the relay's rate on the same link divided by this
/// one's says how close the relay is to the kernel's limit. Detached on drop.
pub struct Reflector {
    attached: Attached,
}

impl Reflector {
    /// Loads the reflector and attaches it to `interface` (in the calling
    /// thread's network namespace), driver mode first.
    pub fn attach(interface: &str) -> Result<Self, XdpError> {
        Ok(Self {
            attached: Attached::new(program_names::XDP_REFLECT, interface)?,
        })
    }

    /// The mode the program is attached in.
    pub fn mode(&self) -> AttachedMode {
        self.attached.mode
    }
}

/// The benchmark's sink: counts and drops UDP frames to one destination port
/// and passes everything else. Detached on drop.
pub struct SinkCounter {
    attached: Attached,
}

impl SinkCounter {
    /// Loads the counter and attaches it to `interface` (in the calling
    /// thread's network namespace), driver mode first. It counts nothing
    /// until [`set_port`](Self::set_port).
    pub fn attach(interface: &str) -> Result<Self, XdpError> {
        Ok(Self {
            attached: Attached::new(program_names::XDP_BENCH_COUNT, interface)?,
        })
    }

    /// The mode the program is attached in.
    pub fn mode(&self) -> AttachedMode {
        self.attached.mode
    }

    /// Counts (and drops) UDP frames to `port` from the next frame on; 0 counts nothing.
    pub fn set_port(&mut self, port: u16) -> Result<(), XdpError> {
        let map = self
            .attached
            .ebpf
            .map_mut(map_names::SINK_CONFIG)
            .ok_or(XdpError::Missing {
                kind: "map",
                name: map_names::SINK_CONFIG,
            })?;
        let mut array: Array<_, SinkConfig> =
            Array::try_from(map).map_err(|source| XdpError::Map {
                what: "opening the sink config map",
                source,
            })?;
        let config = SinkConfig {
            udp_port: port,
            _pad: [0; 6],
        };
        array.set(0, config, 0).map_err(|source| XdpError::Map {
            what: "writing the sink config",
            source,
        })
    }

    /// Frames and bytes counted so far, summed over all CPUs.
    pub fn counters(&self) -> Result<SinkCounters, XdpError> {
        let per_cpu =
            per_cpu_values::<SinkCounters>(&self.attached.ebpf, map_names::SINK_COUNTERS)?;
        Ok(per_cpu
            .iter()
            .fold(SinkCounters::default(), |acc, c| SinkCounters {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            }))
    }
}

/// A traffic generator built on `BPF_PROG_TEST_RUN` live frames: the kernel
/// runs the generator program on copies of one frame and transmits each with
/// `XDP_TX` out of the interface named at [`run`](Self::run), at rates no
/// socket sender reaches. Each frame gets its headers from the template and
/// a fresh RTP sequence number (with its UDP checksum updated).
pub struct LiveGenerator {
    ebpf: Ebpf,
    frame: Vec<u8>,
}

impl LiveGenerator {
    /// Loads the generator for `frame` (see [`set_frame`](Self::set_frame)).
    pub fn load(frame: &[u8]) -> Result<Self, XdpError> {
        let mut ebpf = load_object()?;
        xdp_program(&mut ebpf, program_names::XDP_BENCH_GEN)?
            .load()
            .map_err(|source| XdpError::Program {
                what: "verifying the benchmark generator".into(),
                source,
            })?;
        let mut generator = Self {
            ebpf,
            frame: Vec::new(),
        };
        generator.set_frame(frame)?;
        Ok(generator)
    }

    /// Makes `frame` the one sent from the next run on: an untagged Ethernet
    /// frame carrying IPv4 (no options) or IPv6 (no extension headers) UDP
    /// with an RTP header whose sequence number is 0, and a complete (or,
    /// for IPv4, zero) UDP checksum.
    pub fn set_frame(&mut self, frame: &[u8]) -> Result<(), XdpError> {
        let ipv6 = match frame.get(12..14) {
            Some([0x08, 0x00]) if frame.get(14) == Some(&0x45) && frame.get(23) == Some(&17) => {
                false
            }
            Some([0x86, 0xdd]) if frame.get(20) == Some(&17) => true,
            _ => {
                return Err(XdpError::BadFrame(
                    "not untagged Ethernet + IPv4/IPv6 + UDP",
                ))
            }
        };
        if frame.len() < MIN_GENERATED_FRAME {
            return Err(XdpError::BadFrame(
                "shorter than the generator's header template",
            ));
        }
        let rtp = if ipv6 { 14 + 40 + 8 } else { 14 + 20 + 8 };
        if frame.get(rtp + 2..rtp + 4) != Some(&[0, 0]) {
            return Err(XdpError::BadFrame("the RTP sequence number must be 0"));
        }
        let mut template = GenTemplate {
            ipv6: u8::from(ipv6),
            ..GenTemplate::default()
        };
        template.head.copy_from_slice(&frame[..GEN_HEAD_LEN]);
        let map = self
            .ebpf
            .map_mut(map_names::GEN_TEMPLATE)
            .ok_or(XdpError::Missing {
                kind: "map",
                name: map_names::GEN_TEMPLATE,
            })?;
        let mut array: Array<_, GenTemplate> =
            Array::try_from(map).map_err(|source| XdpError::Map {
                what: "opening the generator template map",
                source,
            })?;
        array.set(0, template, 0).map_err(|source| XdpError::Map {
            what: "writing the generator template",
            source,
        })?;
        self.frame = frame.to_vec();
        Ok(())
    }

    /// Sends `count` frames out of the interface with index `ifindex` (in
    /// the calling thread's network namespace), `batch` (1..=[`MAX_LIVE_BATCH`])
    /// per kernel batch, and returns the kernel's time for the run. Blocks
    /// until all are sent; a pending signal ends the run early.
    pub fn run(&mut self, ifindex: u32, count: u32, batch: u32) -> Result<Duration, XdpError> {
        if count == 0 {
            return Ok(Duration::ZERO);
        }
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex. Live frames want no metadata and
        // data_end equal to the frame's length.
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(self.frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let program = xdp_program(&mut self.ebpf, program_names::XDP_BENCH_GEN)?;
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(&self.frame),
                ctx_in: Some(&ctx),
                repeat: count,
                attrs: TestRunAttrs::new().xdp_live_frames(batch.clamp(1, MAX_LIVE_BATCH)),
                ..TestRunOptions::new()
            })
            .map_err(|source| XdpError::Program {
                what: "BPF_PROG_TEST_RUN with live frames".into(),
                source,
            })?;
        Ok(result.duration)
    }

    /// Limits the generator to `pps` frames per second from the next run on
    /// (spread evenly, at most [`switchboard_common::GEN_PACE_BURST`] back to back after a
    /// stall); `None` sends as fast as the kernel takes frames.
    pub fn set_rate(&mut self, pps: Option<f64>) -> Result<(), XdpError> {
        let interval_ns = match pps {
            None => 0,
            Some(pps) if (1.0..=1e9).contains(&pps) => (1e9 / pps).round().max(1.0) as u64,
            Some(pps) => return Err(XdpError::BadRate(pps)),
        };
        let map = self
            .ebpf
            .map_mut(map_names::GEN_PACE)
            .ok_or(XdpError::Missing {
                kind: "map",
                name: map_names::GEN_PACE,
            })?;
        let mut array: Array<_, GenPace> =
            Array::try_from(map).map_err(|source| XdpError::Map {
                what: "opening the generator pace map",
                source,
            })?;
        array
            .set(
                0,
                GenPace {
                    interval_ns,
                    next_ns: 0,
                },
                0,
            )
            .map_err(|source| XdpError::Map {
                what: "writing the generator pace",
                source,
            })
    }

    /// Frames the generator program has sent so far (all CPUs).
    pub fn sent(&self) -> Result<u64, XdpError> {
        Ok(per_cpu_values::<u64>(&self.ebpf, map_names::GEN_SENT)?
            .iter()
            .sum())
    }
}

fn per_cpu_values<T: aya::Pod>(ebpf: &Ebpf, name: &'static str) -> Result<Vec<T>, XdpError> {
    let map = ebpf
        .map(name)
        .ok_or(XdpError::Missing { kind: "map", name })?;
    let array: PerCpuArray<_, T> = PerCpuArray::try_from(map).map_err(|source| XdpError::Map {
        what: "opening a per-CPU counter map",
        source,
    })?;
    let values = array.get(&0, 0).map_err(|source| XdpError::Map {
        what: "reading a per-CPU counter map",
        source,
    })?;
    Ok(values.iter().copied().collect())
}
