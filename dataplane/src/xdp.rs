//! Loader for the embedded XDP programs (built from `ebpf/programs`).
//!
//! The BPF object is compiled by this crate's build script and embedded in the
//! binary, so a deployed appliance needs no files besides itself. Map key and
//! value types come from `switchboard-common`, the same crate the programs use.

use std::time::Duration;

use aya::{
    maps::{Array, PerCpuArray},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode},
    Ebpf,
};
use switchboard_common::{map_names, program_names, Counters, IngressConfig};

/// The BPF object as built for this binary.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/switchboard-ebpf"));

/// XDP actions as returned by the program (kernel UAPI values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpAction {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    /// A value the kernel does not define; never returned by our programs.
    Unknown(u32),
}

impl From<u32> for XdpAction {
    fn from(value: u32) -> Self {
        match value {
            0 => Self::Aborted,
            1 => Self::Drop,
            2 => Self::Pass,
            3 => Self::Tx,
            4 => Self::Redirect,
            other => Self::Unknown(other),
        }
    }
}

/// The attach mode actually in use on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachedMode {
    /// Native XDP in the driver.
    Driver,
    /// Generic (skb) XDP: works everywhere, several times slower.
    Skb,
}

impl std::fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Driver => "driver (native)",
            Self::Skb => "skb (generic)",
        })
    }
}

/// Errors from loading, configuring or running the XDP programs.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// The process lacks the privilege to load BPF programs.
    #[error("loading XDP programs needs CAP_BPF and CAP_NET_ADMIN (run as root): {0}")]
    NotPermitted(#[source] aya::EbpfError),
    /// The embedded object could not be loaded (verifier, kernel too old, ...).
    #[error("loading the embedded BPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program or map is missing from the object: a build mismatch.
    #[error("the BPF object has no {kind} named {name}")]
    Missing { kind: &'static str, name: &'static str },
    /// A program-level operation failed.
    #[error("{what}: {source}")]
    Program {
        what: String,
        #[source]
        source: ProgramError,
    },
    /// A map operation failed.
    #[error("{what}: {source}")]
    Map {
        what: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    /// The configured media port range is empty.
    #[error("media port range {min}-{max} is empty")]
    BadPortRange { min: u16, max: u16 },
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Debug, Clone)]
pub struct TestRunOutcome {
    pub action: XdpAction,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Average time per run as measured by the kernel.
    pub duration: Duration,
}

/// The loaded ingress program and its maps.
pub struct XdpIngress {
    ebpf: Ebpf,
    attached: Vec<(String, aya::programs::xdp::XdpLinkId, AttachedMode)>,
}

impl XdpIngress {
    /// Loads the embedded object, runs it through the verifier and writes `config`.
    pub fn load(config: IngressConfig) -> Result<Self, XdpError> {
        if config.port_min > config.port_max {
            return Err(XdpError::BadPortRange {
                min: config.port_min,
                max: config.port_max,
            });
        }
        let mut ebpf = Ebpf::load(BPF_OBJECT).map_err(|err| {
            if is_permission_error(&err) {
                XdpError::NotPermitted(err)
            } else {
                XdpError::Load(err)
            }
        })?;
        let program = xdp_program(&mut ebpf)?;
        program.load().map_err(|source| XdpError::Program {
            what: "verifying the XDP program".into(),
            source,
        })?;
        let mut ingress = Self {
            ebpf,
            attached: Vec::new(),
        };
        ingress.set_config(config)?;
        Ok(ingress)
    }

    /// Replaces the ingress configuration; takes effect for the next packet.
    pub fn set_config(&mut self, config: IngressConfig) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut(map_names::INGRESS_CONFIG)
            .ok_or(XdpError::Missing {
                kind: "map",
                name: map_names::INGRESS_CONFIG,
            })?;
        let mut array: Array<_, IngressConfig> =
            Array::try_from(map).map_err(|source| XdpError::Map {
                what: "opening the ingress config map",
                source,
            })?;
        array.set(0, config, 0).map_err(|source| XdpError::Map {
            what: "writing the ingress config",
            source,
        })
    }

    /// Attaches to `interface`, in driver mode if the driver supports it and in
    /// generic (skb) mode otherwise. Returns the mode in use and logs a warning
    /// naming it when it is the slow one.
    pub fn attach(&mut self, interface: &str) -> Result<AttachedMode, XdpError> {
        let program = xdp_program(&mut self.ebpf)?;
        let (link, mode) = match program.attach(interface, XdpMode::Driver) {
            Ok(link) => (link, AttachedMode::Driver),
            Err(driver_err) => {
                let link = program.attach(interface, XdpMode::Skb).map_err(|source| {
                    XdpError::Program {
                        what: format!(
                            "attaching XDP to {interface} (driver mode failed with: {driver_err}; skb mode)"
                        ),
                        source,
                    }
                })?;
                tracing::warn!(
                    interface,
                    error = %driver_err,
                    "native XDP unavailable; attached in skb (generic) mode, expect far lower packet rates"
                );
                (link, AttachedMode::Skb)
            }
        };
        self.attached.push((interface.to_owned(), link, mode));
        Ok(mode)
    }

    /// Interfaces the program is attached to, with their modes.
    pub fn attachments(&self) -> impl Iterator<Item = (&str, AttachedMode)> {
        self.attached.iter().map(|(name, _, mode)| (name.as_str(), *mode))
    }

    /// Detaches from every interface. Also done on drop.
    pub fn detach_all(&mut self) -> Result<(), XdpError> {
        let program = xdp_program(&mut self.ebpf)?;
        let mut first_err = None;
        for (interface, link, _) in self.attached.drain(..) {
            if let Err(source) = program.detach(link) {
                first_err.get_or_insert(XdpError::Program {
                    what: format!("detaching XDP from {interface}"),
                    source,
                });
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The counters summed over all CPUs.
    pub fn counters(&self) -> Result<Counters, XdpError> {
        let map = self.ebpf.map(map_names::COUNTERS).ok_or(XdpError::Missing {
            kind: "map",
            name: map_names::COUNTERS,
        })?;
        let array: PerCpuArray<_, Counters> =
            PerCpuArray::try_from(map).map_err(|source| XdpError::Map {
                what: "opening the counters map",
                source,
            })?;
        let per_cpu = array.get(&0, 0).map_err(|source| XdpError::Map {
            what: "reading the counters",
            source,
        })?;
        let mut total = Counters::default();
        for counters in per_cpu.iter() {
            total.accumulate(counters);
        }
        Ok(total)
    }

    /// Runs the program once on `frame` with `BPF_PROG_TEST_RUN`, without any
    /// interface: how the program is unit-tested and how the demo shows it.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<TestRunOutcome, XdpError> {
        let program = xdp_program(&mut self.ebpf)?;
        // Room for the frame plus the headroom a rewrite may add.
        let mut out = vec![0u8; frame.len() + 256];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ..TestRunOptions::new()
            })
            .map_err(|source| XdpError::Program {
                what: "BPF_PROG_TEST_RUN".into(),
                source,
            })?;
        out.truncate(result.data_size_out as usize);
        Ok(TestRunOutcome {
            action: XdpAction::from(result.return_value),
            frame: out,
            duration: result.duration,
        })
    }
}

impl Drop for XdpIngress {
    fn drop(&mut self) {
        if let Err(err) = self.detach_all() {
            tracing::error!(%err, "detaching XDP on shutdown failed");
        }
    }
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, XdpError> {
    let program = ebpf
        .program_mut(program_names::XDP_INGRESS)
        .ok_or(XdpError::Missing {
            kind: "program",
            name: program_names::XDP_INGRESS,
        })?;
    program.try_into().map_err(|source| XdpError::Program {
        what: format!("{} is not an XDP program", program_names::XDP_INGRESS),
        source,
    })
}

/// True if any error in the chain is EPERM/EACCES from the kernel.
fn is_permission_error(err: &aya::EbpfError) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return true;
            }
        }
        current = e.source();
    }
    false
}
