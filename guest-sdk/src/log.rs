//! Logging into the host's tracing, attributed to the action. The host truncates long lines
//! (4 KiB) and caps a call's total log volume.

use crate::bindings::callout::plugin::log as wit;

/// Writes one line at `level`.
pub fn log(level: wit::Level, message: impl AsRef<str>) {
    wit::log(level, message.as_ref());
}

/// Writes one line at trace level.
pub fn trace(message: impl AsRef<str>) {
    log(wit::Level::Trace, message);
}

/// Writes one line at debug level.
pub fn debug(message: impl AsRef<str>) {
    log(wit::Level::Debug, message);
}

/// Writes one line at info level.
pub fn info(message: impl AsRef<str>) {
    log(wit::Level::Info, message);
}

/// Writes one line at warn level.
pub fn warn(message: impl AsRef<str>) {
    log(wit::Level::Warn, message);
}

/// Writes one line at error level.
pub fn error(message: impl AsRef<str>) {
    log(wit::Level::Error, message);
}

pub use wit::Level;
