//! `[timeline]`: how much of the machines' boots is kept, with the defaults (config builds it).

use std::time::Duration;

/// Default number of machines remembered; the least recently active are forgotten first.
pub const MAX_MACHINES_DEFAULT: usize = 10_000;
/// Default time in one stage after which a machine counts as stuck.
pub const STUCK_AFTER_SECS_DEFAULT: u64 = 300;

/// The timeline's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Machines remembered at most.
    pub max_machines: usize,
    /// Time in one stage after which a machine counts as stuck.
    pub stuck_after: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            max_machines: MAX_MACHINES_DEFAULT,
            stuck_after: Duration::from_secs(STUCK_AFTER_SECS_DEFAULT),
        }
    }
}
