use which::which;

/// Rebuild the BPF object when the linker changes (e.g. after a reinstall of a
/// different bpf-linker version), since cargo cannot see it otherwise.
fn main() {
    // Packet headers sit at any alignment. By default LLVM splits every
    // unaligned load and store into single bytes; the kernel's verifier and
    // JIT take misaligned packet access on the architectures that handle it
    // (x86, arm64), so let bpf-linker emit word accesses. A linker built on
    // an LLVM without the feature warns and ignores it.
    println!("cargo:rustc-link-arg=--cpu-features=+allows-misaligned-mem-access");
    match which("bpf-linker") {
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        Err(err) => println!(
            "cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup` to install bpf-linker 0.10.4"
        ),
    }
}
