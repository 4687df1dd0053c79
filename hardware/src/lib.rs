//! Host hardware detection: what the running machine offers the media paths.
//!
//! The crate reads the CPU (`/proc/cpuinfo`, NUMA nodes) and every network
//! interface (`/sys/class/net`, the ETHTOOL ioctls, `ip -d link`), judges
//! each interface against a table of NIC driver profiles (native XDP,
//! redirect targets, AF_XDP zero-copy, multi-buffer, the single-buffer MTU
//! limit) and reports findings with the command that fixes each.
//!
//! Reading is split from parsing: [`HostSnapshot`] and [`InterfaceSnapshot`]
//! hold raw values, and [`HostReport::from_snapshot`] and the `parse_*`
//! functions are pure, so all of it is testable on captured text.
//!
//! ```no_run
//! let report = hardware::HostReport::detect(None)?;
//! print!("{}", hardware::render_text(&report));
//! if !report.xdp_can_run() {
//!     eprintln!("the XDP fast path cannot run on this host");
//! }
//! # Ok::<(), hardware::HardwareError>(())
//! ```

mod capacity;
mod cpu;
mod ethtool;
mod iplink;
mod profile;
mod render;
mod report;
mod snapshot;
mod virtio;

use std::path::PathBuf;

pub use capacity::{practical_ceiling, theoretical_capacity, DEFAULT_PRACTICAL_FRACTION};
pub use cpu::{format_cpulist, parse_cpulist, CpuProfile, NumaNode};
pub use ethtool::{
    parse_channels, parse_drvinfo, parse_ethtool_k, parse_features, parse_ringparam, Channels,
    DriverInfo, FeatureState, Offload, Offloads, RingParams,
};
pub use iplink::{parse_ip_link, AttachedXdp, XdpAttachMode};
pub use profile::{
    profile_for, DriverProfile, RedirectTarget, Support, FALLBACK_PROFILE, KNOWN_PROFILES,
};
pub use render::render_text;
pub use report::{
    Finding, HostReport, InterfaceReport, Severity, XdpMode, SWITCHBOARD_XDP_PROGRAM,
};
pub use snapshot::{parse_auxv_page_size, HostSnapshot, InterfaceSnapshot};
pub use virtio::VirtioNetFeatures;

/// Errors reading the host description.
#[derive(Debug, thiserror::Error)]
pub enum HardwareError {
    /// A file the report cannot do without (`/proc/cpuinfo`,
    /// `/sys/class/net`) could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        #[source]
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// Encoding a report or snapshot as JSON failed.
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}
