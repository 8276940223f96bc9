//! `[ipv6]`: whether router advertisements are sent (config builds it).

/// Whether the daemon sends IPv6 router advertisements on the boot interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RouterAdvertisement {
    /// None (the default): the network's routers, if any, advertise.
    #[default]
    Off,
    /// Answer router solicitations with "no IPv6 router here" (router lifetime 0, no prefix,
    /// no DHCPv6), which ends iPXE's wait for IPv6 autoconfiguration on IPv4-only networks.
    NoRouter,
}

/// The router advertisements' settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Off, or "no IPv6 router here".
    pub router_advertisement: RouterAdvertisement,
}
