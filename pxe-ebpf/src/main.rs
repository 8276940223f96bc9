//! XDP program of pxe-daemon.
//!
//! Classifies every frame that reaches the interface (PXE DHCP, boot-server discovery, TFTP
//! requests, TFTP transfer traffic, other, malformed) and counts it per class. For now every frame
//! gets `XDP_PASS`: the kernel sockets of the daemon answer them. The AF_XDP redirect comes later.
#![no_std]
#![no_main]

mod maps;
mod parse;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use pxe_common::PacketClass;

#[xdp]
pub fn pxe_xdp(ctx: XdpContext) -> u32 {
    let config = maps::config();
    let class = match parse::classify(&ctx, &config) {
        Ok(class) => class,
        Err(err) => {
            debug!(&ctx, "malformed frame: {}", err.reason());
            PacketClass::Malformed
        }
    };
    maps::count(class);
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
