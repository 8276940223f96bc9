//! `[timeline]` into [`timeline::Settings`].

use std::time::Duration;

use super::{wire, ConfigError, SourceFile};
use crate::timeline;

/// Validates `[timeline]`.
pub(super) fn build_timeline(
    w: &wire::WireTimeline,
    src: Option<&SourceFile<'_>>,
) -> Result<timeline::Settings, ConfigError> {
    let mut settings = timeline::Settings::default();
    if let Some(src) = src {
        if let Some(m) = &w.max_machines {
            if !(1..=1_000_000).contains(m.get_ref()) {
                return Err(src.error(
                    Some(m.span()),
                    format!(
                        "timeline.max_machines {} is outside 1..=1000000",
                        m.get_ref()
                    ),
                ));
            }
            settings.max_machines = *m.get_ref();
        }
        if let Some(s) = &w.stuck_after_secs {
            if !(1..=86_400).contains(s.get_ref()) {
                return Err(src.error(
                    Some(s.span()),
                    format!(
                        "timeline.stuck_after_secs {} is outside 1..=86400",
                        s.get_ref()
                    ),
                ));
            }
            settings.stuck_after = Duration::from_secs(*s.get_ref());
        }
    }
    Ok(settings)
}
