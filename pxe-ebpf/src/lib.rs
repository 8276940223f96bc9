//! Empty library target: lets `pxe-daemon` list this crate as a build-dependency, so cargo
//! rebuilds the daemon (and its build.rs, which builds the real eBPF binary) when it changes.
#![no_std]
