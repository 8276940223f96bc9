//! `[log]`: the filter and format `main` sets logging up with, with `--log-level` and
//! `--log-format` on top.

use serde::Deserialize;

use super::{error::pick, wire, ConfigError, SourceFile};

/// Default log filter.
pub const LOG_LEVEL_DEFAULT: &str = "info";

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// `[log]`: what `main` sets logging up with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// Log filter directives.
    pub level: String,
    /// Log format.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            level: LOG_LEVEL_DEFAULT.to_owned(),
            format: LogFormat::default(),
        }
    }
}

/// Validates `[log]` with `--log-level` and `--log-format` on top.
pub(super) fn build_log(
    log: wire::WireLog,
    level_flag: Option<String>,
    format_flag: Option<LogFormat>,
    src: Option<&SourceFile<'_>>,
) -> Result<LogSettings, ConfigError> {
    let level = match pick(level_flag, "--log-level", log.level, src) {
        Some((level, origin)) => {
            tracing_subscriber::EnvFilter::builder()
                .parse(&level)
                .map_err(|e| origin.error(format!("log level {level:?}: {e}")))?;
            level
        }
        None => LOG_LEVEL_DEFAULT.to_owned(),
    };
    let format = pick(format_flag, "--log-format", log.format, src)
        .map(|(f, _)| f)
        .unwrap_or_default();
    Ok(LogSettings { level, format })
}
