//! Structured logging set-up with `tracing`: text for people, JSON for log collectors.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The log filter `filter` (`--log`, `tracing` syntax), or why it does not parse.
pub fn filter(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(filter).map_err(|e| {
        format!(
            "{}: invalid log filter {filter:?}: {e}",
            facekey_settings::env::LOG
        )
    })
}

/// Install the global subscriber. Fails if the filter does not parse or one is already set.
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = self::filter(filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    result.map_err(|e| format!("cannot install the log subscriber: {e}"))
}
