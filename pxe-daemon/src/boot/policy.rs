//! Groups (Matchbox style) and per-arch defaults, and the decision for one machine.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use ipnet::Ipv4Net;

use super::{Arch, Firmware, MacAddr, Machine};

/// Path of the iPXE entry script on the HTTP server, handed to every iPXE client by default.
pub const IPXE_SCRIPT_PATH: &str = "/boot.ipxe";

/// NBP candidates per CPU family for PXE ROMs, first one present in the root wins.
const BIOS_NBPS: &[&str] = &["undionly.kpxe", "undionly.kkpxe", "ipxe.pxe"];
const EFI_X64_NBPS: &[&str] = &["ipxe.efi", "snponly.efi", "x86_64/ipxe.efi"];
const EFI_IA32_NBPS: &[&str] = &["ipxe-i386.efi", "i386/ipxe.efi"];
const EFI_ARM64_NBPS: &[&str] = &["ipxe-arm64.efi", "arm64/ipxe.efi", "snp-arm64.efi"];
const EFI_ARM32_NBPS: &[&str] = &["ipxe-arm32.efi", "arm32/ipxe.efi"];
const EFI_RISCV64_NBPS: &[&str] = &["ipxe-riscv64.efi", "riscv64/ipxe.efi"];
/// Every candidate list, indexed as [`RootView`] keeps them.
const NBP_FAMILIES: [&[&str]; 6] = [
    BIOS_NBPS,
    EFI_X64_NBPS,
    EFI_IA32_NBPS,
    EFI_ARM64_NBPS,
    EFI_ARM32_NBPS,
    EFI_RISCV64_NBPS,
];
/// How often the daemon looks into the boot root for the NBPs ([`RootView::refresh`]). A storm
/// of DISCOVERs then costs no `stat` at all, and an NBP the operator adds or removes is seen
/// within this time.
pub const ROOT_REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// The policy's view of the boot root: which candidate NBP of each CPU family it holds (the
/// first one present, else the first of the list). Deciding only reads it; whoever owns the
/// root refreshes it ([`RootView::refresh`], every [`ROOT_REFRESH_INTERVAL`] in the daemon), so
/// the policy neither stats files nor reads the clock.
#[derive(Debug, Default)]
pub struct RootView {
    present: [AtomicUsize; NBP_FAMILIES.len()],
}

impl RootView {
    /// Looks again: `holds(path)` says whether the root holds `path` (relative to the root).
    pub fn refresh(&self, holds: impl Fn(&str) -> bool) {
        for (present, candidates) in self.present.iter().zip(NBP_FAMILIES) {
            let index = candidates.iter().position(|c| holds(c)).unwrap_or(0);
            present.store(index, Ordering::Relaxed);
        }
    }

    /// Index of the candidate of `family` the root held at the last look.
    fn candidate(&self, family: usize) -> usize {
        self.present[family].load(Ordering::Relaxed)
    }
}

/// What a group matches on. Empty lists match everything; every non-empty list must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selectors {
    /// Exact MACs.
    pub macs: Vec<MacAddr>,
    /// MAC prefixes (1-6 bytes), e.g. a vendor OUI.
    pub mac_prefixes: Vec<Vec<u8>>,
    /// Option 93 values.
    pub archs: Vec<Arch>,
    /// Firmware kinds.
    pub firmware: Vec<Firmware>,
    /// Networks the relay address (giaddr) must be in; a group with these never matches a
    /// machine on the local segment.
    pub relays: Vec<Ipv4Net>,
}

impl Selectors {
    /// Whether `m` satisfies every selector.
    pub fn matches(&self, m: &Machine) -> bool {
        (self.macs.is_empty() || self.macs.contains(&m.mac))
            && (self.mac_prefixes.is_empty()
                || self.mac_prefixes.iter().any(|p| m.mac.0.starts_with(p)))
            && (self.archs.is_empty() || m.arch.is_some_and(|a| self.archs.contains(&a)))
            && (self.firmware.is_empty() || m.firmware.is_some_and(|f| self.firmware.contains(&f)))
            && (self.relays.is_empty()
                || m.relay
                    .is_some_and(|r| self.relays.iter().any(|n| n.contains(&r))))
    }
}

/// A group of machines and what they boot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Group {
    /// Name, for logs, metrics, the timeline, and `group` in TFTP rewrites and profile templates.
    pub name: String,
    /// Which machines belong.
    pub selectors: Selectors,
    /// NBP for the PXE ROM stage (path in the boot root), instead of the arch default.
    pub boot_file: Option<String>,
    /// What UEFI HTTP Boot gets: a path on our HTTP server or a full http(s):// URL.
    pub http_boot_file: Option<String>,
    /// What iPXE gets: a path on our HTTP server or a full URL; default [`IPXE_SCRIPT_PATH`].
    pub script: Option<String>,
    /// Profile rendered by the HTTP server for this group.
    pub profile: Option<String>,
    /// Variables handed to the profile templates.
    pub vars: BTreeMap<String, String>,
}

/// Where a machine's next boot stage comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootTarget {
    /// A file in the boot root, fetched over TFTP from the next-server.
    Tftp(String),
    /// A full URL (iPXE script, or an EFI binary for UEFI HTTP Boot).
    Url(String),
}

impl BootTarget {
    /// The value for the DHCP `file` field / option 67.
    pub fn as_boot_file(&self) -> &str {
        match self {
            BootTarget::Tftp(f) | BootTarget::Url(f) => f,
        }
    }
}

/// The decision for one machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootSpec {
    /// What the machine's firmware fetches next.
    pub target: BootTarget,
    /// The group that matched, if any.
    pub group: Option<String>,
    /// The group's profile, if any.
    pub profile: Option<String>,
}

/// Decides what each machine boots. Built once from the config; cheap to share.
#[derive(Clone, Debug, Default)]
pub struct BootPolicy {
    root: Arc<RootView>,
    arch_defaults: BTreeMap<u16, String>,
    groups: Vec<Group>,
    http_base_url: Option<String>,
    http_port: u16,
}

impl BootPolicy {
    /// A policy with per-arch overrides, groups in priority order (the first that matches
    /// wins), and the HTTP server's base URL (default: `http://<server address>:<http_port>`).
    /// Until [`BootPolicy::root_view`] is refreshed it takes the boot root for empty.
    pub fn new(
        arch_defaults: BTreeMap<u16, String>,
        groups: Vec<Group>,
        http_base_url: Option<String>,
        http_port: u16,
    ) -> BootPolicy {
        BootPolicy {
            root: Arc::default(),
            arch_defaults,
            groups,
            http_base_url: http_base_url.map(|u| u.trim_end_matches('/').to_owned()),
            http_port,
        }
    }

    /// What the policy knows of the boot root, for its owner to refresh (shared by clones).
    pub fn root_view(&self) -> &RootView {
        &self.root
    }

    /// The first group `m` belongs to.
    pub fn group_of(&self, m: &Machine) -> Option<&Group> {
        self.groups.iter().find(|g| g.selectors.matches(m))
    }

    /// What `m` boots, as seen from the server address `server` (the one the machine reaches
    /// us at). `None` for a machine that is not a PXE, HTTP Boot or iPXE client.
    pub fn decide(&self, m: &Machine, server: Ipv4Addr) -> Option<BootSpec> {
        let firmware = m.firmware?;
        let group = self.group_of(m);
        let target = match firmware {
            Firmware::Ipxe => BootTarget::Url(
                self.url(
                    server,
                    group
                        .and_then(|g| g.script.as_deref())
                        .unwrap_or(IPXE_SCRIPT_PATH),
                ),
            ),
            Firmware::UefiHttp => {
                let file = match group.and_then(|g| g.http_boot_file.as_deref()) {
                    Some(f) => f.to_owned(),
                    None => self.nbp_for(m.arch_or_bios()),
                };
                BootTarget::Url(self.url(server, &file))
            }
            Firmware::BiosPxe | Firmware::UefiPxe => BootTarget::Tftp(
                group
                    .and_then(|g| g.boot_file.clone())
                    .unwrap_or_else(|| self.nbp_for(m.arch_or_bios())),
            ),
        };
        Some(BootSpec {
            target,
            group: group.map(|g| g.name.clone()),
            profile: group.and_then(|g| g.profile.clone()),
        })
    }

    /// What a machine that is not a PXE client gets from a full DHCP server, as dnsmasq's
    /// `dhcp-boot` does: the NBP for its arch (BIOS when unknown) and its group's choice. This
    /// lets operators' `nmap --script broadcast-dhcp-discover` show the boot file and server.
    pub fn decide_plain(&self, m: &Machine) -> BootSpec {
        let group = self.group_of(m);
        BootSpec {
            target: BootTarget::Tftp(
                group
                    .and_then(|g| g.boot_file.clone())
                    .unwrap_or_else(|| self.nbp_for(m.arch_or_bios())),
            ),
            group: group.map(|g| g.name.clone()),
            profile: group.and_then(|g| g.profile.clone()),
        }
    }

    /// The default network boot program for `arch`: the configured one, else the first
    /// candidate for its CPU family that the root holds, else the first candidate.
    pub fn nbp_for(&self, arch: Arch) -> String {
        if let Some(file) = self.arch_defaults.get(&arch.0) {
            return file.clone();
        }
        let family = match arch.family() {
            "x64" => 1,
            "x86" if arch == Arch::BIOS => 0,
            "x86" => 2,
            "arm64" => 3,
            "arm32" => 4,
            "riscv64" => 5,
            _ => 0,
        };
        let candidates = NBP_FAMILIES[family];
        candidates[self.root.candidate(family)].to_string()
    }

    /// A full URL for `path_or_url` on our HTTP server (kept as is when it is already a URL).
    fn url(&self, server: Ipv4Addr, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            return path_or_url.to_owned();
        }
        let path = path_or_url.trim_start_matches('/');
        match &self.http_base_url {
            Some(base) => format!("{base}/{path}"),
            None if self.http_port == 80 => format!("http://{server}/{path}"),
            None => format!("http://{server}:{}/{path}", self.http_port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    fn machine(firmware: Firmware, arch: u16) -> Machine {
        Machine {
            mac: "52:54:00:00:00:01".parse().unwrap(),
            arch: Some(Arch(arch)),
            firmware: Some(firmware),
            guid: None,
            relay: None,
            circuit_id: None,
            remote_id: None,
        }
    }

    fn target(p: &BootPolicy, m: &Machine) -> String {
        p.decide(m, SERVER)
            .unwrap()
            .target
            .as_boot_file()
            .to_owned()
    }

    #[test]
    fn zero_config_defaults_per_firmware() {
        let p = BootPolicy::new(BTreeMap::new(), vec![], None, 80);
        assert_eq!(target(&p, &machine(Firmware::BiosPxe, 0)), "undionly.kpxe");
        assert_eq!(target(&p, &machine(Firmware::UefiPxe, 7)), "ipxe.efi");
        assert_eq!(target(&p, &machine(Firmware::UefiPxe, 9)), "ipxe.efi");
        assert_eq!(
            target(&p, &machine(Firmware::UefiPxe, 11)),
            "ipxe-arm64.efi"
        );
        assert_eq!(
            target(&p, &machine(Firmware::UefiHttp, 16)),
            "http://198.18.0.1/ipxe.efi"
        );
        assert_eq!(
            target(&p, &machine(Firmware::Ipxe, 0)),
            "http://198.18.0.1/boot.ipxe"
        );
        let non_pxe = Machine {
            firmware: None,
            ..machine(Firmware::BiosPxe, 0)
        };
        assert_eq!(p.decide(&non_pxe, SERVER), None);
    }

    #[test]
    fn root_contents_and_arch_overrides_choose_the_nbp() {
        let holds = |path: &str| path == "snponly.efi";
        let p = BootPolicy::new(BTreeMap::new(), vec![], None, 8080);
        p.root_view().refresh(holds);
        assert_eq!(target(&p, &machine(Firmware::UefiPxe, 7)), "snponly.efi");
        assert_eq!(
            target(&p, &machine(Firmware::Ipxe, 7)),
            "http://198.18.0.1:8080/boot.ipxe"
        );
        let p = BootPolicy::new(
            BTreeMap::from([(0, "custom.kpxe".to_owned())]),
            vec![],
            Some("http://boot.example:81/".into()),
            80,
        );
        assert_eq!(target(&p, &machine(Firmware::BiosPxe, 0)), "custom.kpxe");
        assert_eq!(
            target(&p, &machine(Firmware::Ipxe, 0)),
            "http://boot.example:81/boot.ipxe"
        );
    }

    #[test]
    fn an_nbp_added_to_the_root_is_seen_at_the_next_look() {
        let p = BootPolicy::new(BTreeMap::new(), vec![], None, 8080);
        let uefi = machine(Firmware::UefiPxe, 7);
        // Nothing looked at yet, or an empty root: the first candidate.
        assert_eq!(target(&p, &uefi), "ipxe.efi");
        let clone = p.clone();
        p.root_view().refresh(|c| c == "snponly.efi");
        assert_eq!(target(&p, &uefi), "snponly.efi");
        // Clones share the view.
        assert_eq!(target(&clone, &uefi), "snponly.efi");
        p.root_view()
            .refresh(|c| c == "snponly.efi" || c == "ipxe.efi");
        assert_eq!(target(&p, &uefi), "ipxe.efi");
    }

    #[test]
    fn first_matching_group_wins_and_every_selector_must_match() {
        let workers = Group {
            name: "workers".into(),
            selectors: Selectors {
                mac_prefixes: vec![vec![0x52, 0x54, 0x00]],
                firmware: vec![Firmware::BiosPxe, Firmware::Ipxe],
                ..Selectors::default()
            },
            boot_file: Some("workers.kpxe".into()),
            script: Some("/workers.ipxe".into()),
            profile: Some("worker".into()),
            ..Group::default()
        };
        let relayed = Group {
            name: "rack9".into(),
            selectors: Selectors {
                relays: vec!["198.19.9.0/24".parse().unwrap()],
                ..Selectors::default()
            },
            boot_file: Some("rack9.kpxe".into()),
            ..Group::default()
        };
        let p = BootPolicy::new(BTreeMap::new(), vec![workers, relayed], None, 80);
        let spec = p.decide(&machine(Firmware::BiosPxe, 0), SERVER).unwrap();
        assert_eq!(spec.target, BootTarget::Tftp("workers.kpxe".into()));
        assert_eq!(spec.group.as_deref(), Some("workers"));
        assert_eq!(spec.profile.as_deref(), Some("worker"));
        assert_eq!(
            target(&p, &machine(Firmware::Ipxe, 0)),
            "http://198.18.0.1/workers.ipxe"
        );
        // UEFI is not in the workers' firmware list, and it is not relayed: defaults.
        assert_eq!(target(&p, &machine(Firmware::UefiPxe, 7)), "ipxe.efi");
        let mut far = machine(Firmware::UefiPxe, 7);
        far.relay = Some(Ipv4Addr::new(198, 19, 9, 1));
        assert_eq!(target(&p, &far), "rack9.kpxe");
        far.relay = Some(Ipv4Addr::new(198, 19, 10, 1));
        assert_eq!(target(&p, &far), "ipxe.efi");
    }
}
