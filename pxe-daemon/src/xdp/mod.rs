//! Loading the XDP program, attaching it to the interface, and reading its counters.
//!
//! Attach order for `auto`: driver (native) mode, then skb (generic) mode, then none; the mode in
//! use is logged and exported as `pxe_xdp_attach_mode`. The program is detached when the
//! [`XdpAttachment`] is dropped, so a daemon that stops leaves the interface as it found it.

mod counters;
pub mod frames;
pub mod metrics;

use std::{ops::RangeInclusive, os::fd::AsRawFd, time::Duration};

use aya::{
    maps::{Array, XskMap},
    programs::{ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode},
    Ebpf, EbpfError, EbpfLoader,
};
pub use counters::XdpCounters;
pub use metrics::AttachModeGauge;
use pxe_common::{XdpConfig, CONFIG_MAP, XDP_PROGRAM, XSKS_MAP};
use tokio::io::unix::AsyncFd;
use tracing::{debug, info, warn};

/// The eBPF object built by build.rs, embedded in the binary.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pxe-ebpf"));

/// How the XDP program is to be attached (`xdp.mode`, `--xdp-mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttachPolicy {
    /// Driver (native) mode, else skb (generic) mode, else run without XDP, with a warning.
    #[default]
    Auto,
    /// Driver mode or refuse to start.
    Driver,
    /// Generic (skb) mode or refuse to start.
    Skb,
    /// Do not load the XDP program.
    Off,
}

/// How the XDP program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Run by the driver, before an skb exists.
    Driver,
    /// Run by the kernel's generic hook, after the skb is built.
    Skb,
    /// Not attached.
    None,
}

impl AttachMode {
    /// Every mode, for exporting all label values.
    pub const ALL: [AttachMode; 3] = [AttachMode::Driver, AttachMode::Skb, AttachMode::None];

    /// Label value in metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            AttachMode::Driver => "driver",
            AttachMode::Skb => "skb",
            AttachMode::None => "none",
        }
    }
}

/// Errors loading or attaching the XDP program.
#[derive(Debug, thiserror::Error)]
pub enum XdpLoadError {
    /// The object could not be loaded into the kernel.
    #[error("loading the XDP object: {0}")]
    Load(#[from] EbpfError),
    /// The program is missing from the object or has the wrong type (a build bug).
    #[error("XDP program {XDP_PROGRAM} in the object: {0}")]
    Program(String),
    /// The verifier or the kernel refused the program.
    #[error("loading XDP program {XDP_PROGRAM} into the kernel: {0}")]
    Verify(#[source] ProgramError),
    /// A map is missing from the object or could not be written.
    #[error("XDP map {name}: {reason}")]
    Map {
        /// The map.
        name: &'static str,
        /// What failed.
        reason: String,
    },
    /// BPF_PROG_TEST_RUN refused to run the program on a frame.
    #[error("running XDP program {XDP_PROGRAM} on a frame (BPF_PROG_TEST_RUN): {0}")]
    TestRun(#[source] ProgramError),
    /// Attaching in the required mode failed.
    #[error("attaching XDP program to {interface} in {mode} mode: {source}")]
    Attach {
        /// The interface.
        interface: String,
        /// The mode that was required.
        mode: &'static str,
        /// What the kernel said.
        source: ProgramError,
    },
}

/// What one BPF_PROG_TEST_RUN call measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The XDP action of the last run (1 drop, 2 pass, 3 tx, 4 redirect).
    pub action: u32,
    /// The kernel's mean time per run: its `duration` is the time of all repeats divided by
    /// their number.
    pub per_run: Duration,
}

/// A loaded XDP program and, when attached, its link on the interface.
#[derive(Debug)]
pub struct XdpAttachment {
    ebpf: Ebpf,
    link: Option<aya::programs::xdp::XdpLinkId>,
    interface: String,
    mode: AttachMode,
    counters: XdpCounters,
    log_task: Option<tokio::task::JoinHandle<()>>,
    /// The settings last written to the CONFIG map (steering flags are changed in place).
    config: XdpConfig,
}

impl XdpAttachment {
    /// Loads the program with `program_config` (transfer ports, server address, rate limit,
    /// steering) and attaches it to `interface`
    /// as `setting` says. In `auto`, a failure to load or attach is a warning and the daemon goes
    /// on with [`AttachMode::None`]; in `driver` or `skb` it is an error.
    pub fn load(
        interface: &str,
        setting: AttachPolicy,
        program_config: XdpConfig,
        debug_log: bool,
    ) -> Result<Option<XdpAttachment>, XdpLoadError> {
        let wanted: &[(XdpMode, AttachMode)] = match setting {
            AttachPolicy::Off => {
                info!(interface, "XDP disabled by configuration (xdp.mode = off)");
                return Ok(None);
            }
            AttachPolicy::Auto => &[
                (XdpMode::Driver, AttachMode::Driver),
                (XdpMode::Skb, AttachMode::Skb),
            ],
            AttachPolicy::Driver => &[(XdpMode::Driver, AttachMode::Driver)],
            AttachPolicy::Skb => &[(XdpMode::Skb, AttachMode::Skb)],
        };
        let required = setting != AttachPolicy::Auto;

        let mut attachment = match Self::load_object(interface, program_config, debug_log) {
            Ok(a) => a,
            Err(e) if !required => {
                warn!(interface, error = %e, "XDP program not loaded; running without XDP");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };

        let program = attachment.program()?;
        for &(xdp_mode, mode) in wanted {
            match program.attach(interface, xdp_mode) {
                Ok(link) => {
                    attachment.link = Some(link);
                    attachment.mode = mode;
                    info!(interface, mode = mode.label(), "XDP program attached");
                    return Ok(Some(attachment));
                }
                Err(source) if required => {
                    return Err(XdpLoadError::Attach {
                        interface: interface.to_owned(),
                        mode: mode.label(),
                        source,
                    })
                }
                Err(e) => {
                    warn!(interface, mode = mode.label(), error = %e, "XDP attach failed");
                }
            }
        }
        warn!(
            interface,
            "XDP program could not be attached in any mode; running without XDP"
        );
        Ok(None)
    }

    /// Loads the program with `program_config` without attaching it anywhere, to run it on
    /// frames given with [`XdpAttachment::test_run`] (the tests, `pxe-bench xdp-cost`). Needs
    /// root (CAP_BPF) and a tokio runtime (the program's log reader).
    pub fn load_unattached(program_config: XdpConfig) -> Result<XdpAttachment, XdpLoadError> {
        Self::load_object("test-run", program_config, false)
    }

    /// Runs the program on `frame` `repeat` times in the kernel (BPF_PROG_TEST_RUN; the frame
    /// goes nowhere, the maps and counters change as for a received frame).
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> Result<TestRunOutcome, XdpLoadError> {
        let result = self
            .program()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                ..TestRunOptions::default()
            })
            .map_err(XdpLoadError::TestRun)?;
        Ok(TestRunOutcome {
            action: result.return_value,
            per_run: result.duration,
        })
    }

    fn load_object(
        interface: &str,
        program_config: XdpConfig,
        debug_log: bool,
    ) -> Result<XdpAttachment, XdpLoadError> {
        // aya-log levels: 0 = off .. 4 = debug. The program logs only malformed frames, at debug.
        let log_level: u8 = if debug_log { 4 } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .override_global("AYA_LOG_LEVEL", &log_level, false)
            .load(EBPF_OBJECT)?;

        let log_task = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => spawn_log_reader(logger),
            Err(e) => {
                debug!(error = %e, "XDP program log not available");
                None
            }
        };

        write_config(&mut ebpf, program_config)?;

        let counters = XdpCounters::from_ebpf(&mut ebpf)?;
        let program: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or_else(|| XdpLoadError::Program("missing".into()))?
            .try_into()
            .map_err(|e: ProgramError| XdpLoadError::Program(e.to_string()))?;
        program.load().map_err(XdpLoadError::Verify)?;
        debug!(interface, "XDP program loaded");

        Ok(XdpAttachment {
            ebpf,
            link: None,
            interface: interface.to_owned(),
            mode: AttachMode::None,
            counters,
            log_task,
            config: program_config,
        })
    }

    fn program(&mut self) -> Result<&mut Xdp, XdpLoadError> {
        self.ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or_else(|| XdpLoadError::Program("missing".into()))?
            .try_into()
            .map_err(|e: ProgramError| XdpLoadError::Program(e.to_string()))
    }

    /// Replaces the program's settings (they take effect with the next frame).
    pub fn set_config(&mut self, program_config: XdpConfig) -> Result<(), XdpLoadError> {
        write_config(&mut self.ebpf, program_config)?;
        self.config = program_config;
        Ok(())
    }

    /// Sets which services' frames are steered to the AF_XDP sockets
    /// (`pxe_common::XDP_FLAG_STEER_*`; other flags are kept).
    pub fn set_steering(&mut self, steer_flags: u32) -> Result<(), XdpLoadError> {
        let mask = pxe_common::XDP_FLAG_STEER_DHCP | pxe_common::XDP_FLAG_STEER_TFTP;
        let config = XdpConfig {
            flags: (self.config.flags & !mask) | (steer_flags & mask),
            ..self.config
        };
        self.set_config(config)?;
        info!(interface = self.interface, steer_flags, "XDP steering set");
        Ok(())
    }

    /// Puts the AF_XDP socket `socket` in the XSKS map at receive queue `queue`.
    pub fn register_socket(
        &mut self,
        queue: u32,
        socket: impl AsRawFd,
    ) -> Result<(), XdpLoadError> {
        self.xsks()?
            .set(queue, socket, 0)
            .map_err(|e| map_error(XSKS_MAP, format!("queue {queue}: {e}")))
    }

    /// Removes the socket of receive queue `queue` from the XSKS map.
    pub fn unregister_socket(&mut self, queue: u32) -> Result<(), XdpLoadError> {
        self.xsks()?
            .unset(queue)
            .map_err(|e| map_error(XSKS_MAP, format!("queue {queue}: {e}")))
    }

    fn xsks(&mut self) -> Result<XskMap<&mut aya::maps::MapData>, XdpLoadError> {
        self.ebpf
            .map_mut(XSKS_MAP)
            .ok_or_else(|| map_error(XSKS_MAP, "missing from the object"))?
            .try_into()
            .map_err(|e| map_error(XSKS_MAP, e))
    }

    /// The mode the program is attached in.
    pub fn mode(&self) -> AttachMode {
        self.mode
    }

    /// The per-class frame counters of the program.
    pub fn counters(&self) -> XdpCounters {
        self.counters.clone()
    }
}

impl Drop for XdpAttachment {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            let interface = self.interface.clone();
            match self.program().map(|p| p.detach(link)) {
                Ok(Ok(())) => info!(interface, "XDP program detached"),
                Ok(Err(e)) => warn!(interface, error = %e, "detaching XDP program"),
                Err(e) => warn!(interface, error = %e, "detaching XDP program"),
            }
        }
        if let Some(task) = self.log_task.take() {
            task.abort();
        }
    }
}

/// Writes the program's settings into its CONFIG map.
fn write_config(ebpf: &mut Ebpf, program_config: XdpConfig) -> Result<(), XdpLoadError> {
    let mut config_map: Array<_, XdpConfig> = ebpf
        .map_mut(CONFIG_MAP)
        .ok_or_else(|| map_error(CONFIG_MAP, "missing from the object"))?
        .try_into()
        .map_err(|e| map_error(CONFIG_MAP, e))?;
    config_map
        .set(0, program_config, 0)
        .map_err(|e| map_error(CONFIG_MAP, e))
}

/// The program's settings for a daemon configuration: transfer ports, the server address,
/// full-DHCP steering, the rate limit. Steering to AF_XDP starts off: the AF_XDP datapath sets
/// it ([`XdpAttachment::set_steering`]) once every queue has its socket.
pub fn program_config(
    tftp_ports: &RangeInclusive<u16>,
    server: Option<std::net::Ipv4Addr>,
    full_dhcp: bool,
    rate_per_sec: u32,
    rate_burst: u32,
) -> XdpConfig {
    XdpConfig {
        tftp_port_min: *tftp_ports.start(),
        tftp_port_max: *tftp_ports.end(),
        flags: if full_dhcp {
            pxe_common::XDP_FLAG_FULL_DHCP
        } else {
            0
        },
        server_ip_be: server.map_or(0, |ip| u32::from_ne_bytes(ip.octets())),
        rate_per_sec,
        rate_burst,
        reserved: 0,
    }
}

fn map_error(name: &'static str, reason: impl ToString) -> XdpLoadError {
    XdpLoadError::Map {
        name,
        reason: reason.to_string(),
    }
}

/// Forwards the program's aya-log records to `log` (and so to tracing) as they arrive.
fn spawn_log_reader(
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
) -> Option<tokio::task::JoinHandle<()>> {
    // SAFETY: the logger owns its ring buffer's fd, which stays open and the same for as long
    // as the logger lives, and the AsyncFd owns the logger.
    let registered =
        unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            debug!(error = %e, "XDP program log not readable");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}

#[cfg(test)]
mod tests;
