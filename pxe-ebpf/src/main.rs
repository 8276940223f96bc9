//! XDP program of pxe-daemon.
//!
//! Classifies every frame that reaches the boot interface (PXE DHCP, boot-server discovery, TFTP
//! requests, TFTP transfer traffic, other, malformed), sheds DHCP storms with a token bucket per
//! client MAC, and, when the daemon runs its AF_XDP datapath, steers PXE DHCP, 4011 and TFTP
//! frames addressed to the server to the AF_XDP socket of the receiving queue. Everything else
//! passes to the kernel untouched.
#![no_std]
#![no_main]

mod maps;
mod parse;
mod rate;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use pxe_common::{
    PacketClass, Verdict, XdpConfig, XDP_FLAG_FULL_DHCP, XDP_FLAG_STEER_DHCP, XDP_FLAG_STEER_TFTP,
};

/// 255.255.255.255, the address DHCP clients without one send to.
const BROADCAST_BE: u32 = u32::MAX;

#[xdp]
pub(crate) fn pxe_xdp(ctx: XdpContext) -> u32 {
    let config = maps::config();
    let frame = match parse::classify(&ctx, &config) {
        Ok(frame) => frame,
        Err(err) => {
            debug!(&ctx, "malformed frame: {}", err.reason());
            maps::count(PacketClass::Malformed, Verdict::Pass);
            return xdp_action::XDP_PASS;
        }
    };
    let (verdict, action) = decide(&ctx, &config, &frame);
    maps::count(frame.class, verdict);
    action
}

/// The verdict for a classified frame, and the XDP action carrying it out.
#[inline(always)]
fn decide(ctx: &XdpContext, config: &XdpConfig, frame: &parse::Frame) -> (Verdict, u32) {
    let pass = (Verdict::Pass, xdp_action::XDP_PASS);
    // A tagged frame is for a VLAN interface above this one, which the daemon does not serve
    // here (its kernel sockets, bound to this interface, never see such frames): the kernel
    // delivers it, untouched. Steering it would answer it untagged, on the wrong network.
    if frame.tagged {
        return pass;
    }
    let bootp = matches!(frame.class, PacketClass::Dhcp | PacketClass::PxeDiscovery);
    if bootp {
        // Keyed by chaddr, not the Ethernet source: a relay forwards many clients.
        if let Some(mac) = parse::chaddr(ctx, frame.payload) {
            if !rate::allow(mac, config) {
                return (Verdict::RateLimited, xdp_action::XDP_DROP);
            }
        }
    }
    // Each service is steered only once its AF_XDP service runs: the flags say which.
    let steer_dhcp = config.flags & XDP_FLAG_STEER_DHCP != 0;
    let steer_tftp = config.flags & XDP_FLAG_STEER_TFTP != 0;
    if !steer_dhcp && !steer_tftp {
        return pass;
    }
    let to_us = config.server_ip_be == 0 || frame.dst_ip_be == config.server_ip_be;
    let steer = match frame.class {
        PacketClass::Dhcp => {
            steer_dhcp
                && (to_us || frame.dst_ip_be == BROADCAST_BE)
                && (config.flags & XDP_FLAG_FULL_DHCP != 0
                    || parse::dhcp_is_pxe(ctx, frame.payload))
        }
        PacketClass::PxeDiscovery => steer_dhcp && to_us,
        PacketClass::Tftp | PacketClass::TftpTransfer => steer_tftp && to_us,
        PacketClass::Other | PacketClass::Malformed => false,
    };
    if !steer {
        return pass;
    }
    // A queue with no socket falls back to XDP_PASS: the kernel datapath still answers.
    let action = maps::XSKS
        .redirect(ctx.rx_queue_index(), u64::from(xdp_action::XDP_PASS))
        .unwrap_or_else(|fallback| fallback);
    (Verdict::Steer, action)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
