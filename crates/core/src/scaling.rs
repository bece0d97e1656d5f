//! A function's own keep-alive choice, overriding the server's.
//!
//! Written as text everywhere a person sets it: `adaptive`, or `fixed:10m` (any duration
//! [`crate::duration::parse`] reads, up to 24 hours).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The longest fixed keep-alive a function may ask for.
pub const MAX_FIXED_KEEP_ALIVE: Duration = Duration::from_secs(24 * 3600);

/// How long a function's idle environments are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum KeepAliveSetting {
    /// Every idle environment is kept this long.
    Fixed(Duration),
    /// The idle-time histogram decides, with the server's adaptive settings.
    Adaptive,
}

impl fmt::Display for KeepAliveSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepAliveSetting::Adaptive => f.write_str("adaptive"),
            KeepAliveSetting::Fixed(ttl) if ttl.subsec_millis() == 0 => {
                write!(f, "fixed:{}s", ttl.as_secs())
            }
            KeepAliveSetting::Fixed(ttl) => write!(f, "fixed:{}ms", ttl.as_millis()),
        }
    }
}

impl FromStr for KeepAliveSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = "use \"adaptive\" or \"fixed:DURATION\" (e.g. fixed:10m)";
        match text.split_once(':') {
            None if text == "adaptive" => Ok(KeepAliveSetting::Adaptive),
            Some(("fixed", ttl)) => {
                let ttl = crate::duration::parse(ttl)?;
                if ttl.is_zero() || ttl > MAX_FIXED_KEEP_ALIVE {
                    return Err(format!(
                        "a fixed keep-alive must be more than 0 and at most 24h (got {ttl:?})"
                    ));
                }
                Ok(KeepAliveSetting::Fixed(ttl))
            }
            _ => Err(format!("unknown keep-alive {text:?}; {usage}")),
        }
    }
}

impl From<KeepAliveSetting> for String {
    fn from(setting: KeepAliveSetting) -> String {
        setting.to_string()
    }
}

impl TryFrom<String> for KeepAliveSetting {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_settings_read_and_print_the_same() {
        for text in ["adaptive", "fixed:600s", "fixed:250ms"] {
            let setting: KeepAliveSetting = text.parse().unwrap();
            assert_eq!(setting.to_string(), text);
        }
        assert_eq!(
            "fixed:10m".parse(),
            Ok(KeepAliveSetting::Fixed(Duration::from_secs(600)))
        );
    }

    #[test]
    fn bad_keep_alive_settings_say_what_to_write() {
        assert!(
            "forever"
                .parse::<KeepAliveSetting>()
                .unwrap_err()
                .contains("fixed:DURATION")
        );
        assert!(
            "fixed:0s"
                .parse::<KeepAliveSetting>()
                .unwrap_err()
                .contains("more than 0")
        );
        assert!("fixed:25h".parse::<KeepAliveSetting>().is_err());
    }
}
