//! `[boot]` and `[[group]]`: what the boot policy is told (config builds it).

use std::collections::BTreeMap;

use super::Group;

/// The boot policy's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Base of the URLs handed out; default `http://<server>:<http port>`.
    pub http_base_url: Option<String>,
    /// NBP per option-93 value.
    pub arch_defaults: BTreeMap<u16, String>,
    /// Groups, first match wins.
    pub groups: Vec<Group>,
}
