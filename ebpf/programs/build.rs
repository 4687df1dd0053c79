use which::which;

/// Rebuild the BPF object when the linker changes (e.g. after a reinstall of a
/// different bpf-linker version), since cargo cannot see it otherwise.
fn main() {
    match which("bpf-linker") {
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        Err(err) => println!(
            "cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup` to install bpf-linker 0.10.4"
        ),
    }
}
