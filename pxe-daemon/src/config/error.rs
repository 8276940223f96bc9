//! Refusals and where they point: a value's origin (a span of the file, or a flag) turned into
//! `file:line:column: reason` or `--flag: reason`.

use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

use toml::Spanned;

/// Why a configuration was refused. Displays as `file:line:column: reason`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A value in the file is wrong (syntax, type, unknown key or a refused value).
    #[error("{}:{line}:{column}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A value given on the command line (or its environment variable) is wrong.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag, e.g. `--root`.
        flag: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a value came from, so that a refusal can point at it.
#[derive(Clone, Debug)]
pub(super) enum Origin<'a> {
    /// A span in the config file.
    File(&'a SourceFile<'a>, Range<usize>),
    /// A command-line flag.
    Flag(&'static str),
}

/// The config file's path and text, for turning spans into line and column.
#[derive(Debug)]
pub(super) struct SourceFile<'a> {
    /// The file.
    pub(super) path: &'a Path,
    /// Its text.
    pub(super) text: &'a str,
}

impl SourceFile<'_> {
    /// A refusal pointing at the start of `span` (the file's start without one).
    pub(super) fn error(
        &self,
        span: Option<Range<usize>>,
        reason: impl fmt::Display,
    ) -> ConfigError {
        let offset = span.map_or(0, |s| s.start).min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            reason: reason.to_string(),
        }
    }
}

impl Origin<'_> {
    /// A refusal pointing at this origin.
    pub(super) fn error(&self, reason: impl fmt::Display) -> ConfigError {
        match self {
            Origin::File(src, span) => src.error(Some(span.clone()), reason),
            Origin::Flag(flag) => ConfigError::Flag {
                flag,
                reason: reason.to_string(),
            },
        }
    }
}

/// Picks the flag if given, else the file's value with its origin.
pub(super) fn pick<'a, T>(
    flag: Option<T>,
    flag_name: &'static str,
    file: Option<Spanned<T>>,
    src: Option<&'a SourceFile<'a>>,
) -> Option<(T, Origin<'a>)> {
    match (flag, file, src) {
        (Some(v), _, _) => Some((v, Origin::Flag(flag_name))),
        (None, Some(s), Some(src)) => {
            let span = s.span();
            Some((s.into_inner(), Origin::File(src, span)))
        }
        _ => None,
    }
}
