//! Builds the XDP program (`pxe-ebpf`) for the BPF target with the nightly toolchain; the daemon
//! embeds the object with `include_bytes_aligned!`.
use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = std::path::Path::new(&manifest_dir)
        .parent()
        .ok_or_else(|| anyhow!("pxe-daemon has no parent directory"))?
        .join("pxe-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("path of pxe-ebpf is not UTF-8"))?;
    let ebpf = aya_build::Package {
        name: "pxe-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([ebpf], Toolchain::default())
        .context("building the XDP program pxe-ebpf (needs nightly rust-src and bpf-linker: run `cargo xtask setup`)")
}
