//! Builds the BPF programs in `ebpf/programs` with nightly and bpf-linker and
//! leaves the object in OUT_DIR, where `dataplane::xdp` embeds it.
use std::path::Path;

fn main() -> anyhow::Result<()> {
    if std::env::var_os("CARGO_FEATURE_XDP").is_none() {
        return Ok(());
    }
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = Path::new(&manifest_dir).join("../ebpf/programs");
    let ebpf_dir = ebpf_dir.canonicalize()?;
    let root_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non UTF-8 path {}", ebpf_dir.display()))?;
    // The shared map types live beside the programs; changes there must rebuild them too.
    println!("cargo:rerun-if-changed={manifest_dir}/../ebpf/common");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "switchboard-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}
