//! Call traces: what the simulator replays, as CSV.
//!
//! One call per line, `at_ms,function,duration_ms[,memory_mb]`, sorted by time; a header
//! line and lines starting with `#` are skipped. `at_ms` is the arrival time from the start
//! of the trace, `duration_ms` how long the handler runs once it has an environment, and
//! `memory_mb` the function's memory (the simulation's `--memory` when absent).

use std::fmt::Write as _;
use std::time::Duration;

/// One call in a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub at: Duration,
    pub function: String,
    pub duration: Duration,
    pub memory_mb: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TraceError {
    #[error("line {line}: expected `at_ms,function,duration_ms[,memory_mb]`, got {text:?}")]
    Malformed { line: usize, text: String },
    #[error("line {line}: calls must be sorted by time ({at_ms} ms comes after a later call)")]
    Unsorted { line: usize, at_ms: f64 },
}

/// Reads a CSV trace.
pub fn parse(text: &str) -> Result<Vec<Call>, TraceError> {
    let mut calls: Vec<Call> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("at_ms") {
            continue;
        }
        let malformed = || TraceError::Malformed {
            line: i + 1,
            text: raw.to_owned(),
        };
        let mut fields = line.split(',').map(str::trim);
        let (Some(at), Some(function), Some(duration), memory, None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(malformed());
        };
        let memory_mb = match memory.filter(|m| !m.is_empty()) {
            Some(m) => Some(
                m.parse::<u32>()
                    .ok()
                    .filter(|m| (1..=1_048_576).contains(m))
                    .ok_or_else(malformed)?,
            ),
            None => None,
        };
        let at_ms: f64 = at.parse().map_err(|_| malformed())?;
        let duration_ms: f64 = duration.parse().map_err(|_| malformed())?;
        if function.is_empty()
            || !at_ms.is_finite()
            || at_ms < 0.0
            || !(0.0..1e9).contains(&duration_ms)
        {
            return Err(malformed());
        }
        let at = Duration::from_secs_f64(at_ms / 1000.0);
        if calls.last().is_some_and(|last| last.at > at) {
            return Err(TraceError::Unsorted { line: i + 1, at_ms });
        }
        calls.push(Call {
            at,
            function: function.to_owned(),
            duration: Duration::from_secs_f64(duration_ms / 1000.0),
            memory_mb,
        });
    }
    Ok(calls)
}

/// Writes a trace as CSV, with its header.
pub fn write(calls: &[Call]) -> String {
    let mut out = String::from("at_ms,function,duration_ms,memory_mb\n");
    for call in calls {
        let _ = write!(
            out,
            "{:.3},{},{:.3}",
            call.at.as_secs_f64() * 1000.0,
            call.function,
            call.duration.as_secs_f64() * 1000.0
        );
        match call.memory_mb {
            Some(m) => {
                let _ = writeln!(out, ",{m}");
            }
            None => out.push_str(",\n"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_reads_back_what_was_written() {
        let calls = vec![
            Call {
                at: Duration::from_millis(0),
                function: "a".into(),
                duration: Duration::from_millis(12),
                memory_mb: Some(512),
            },
            Call {
                at: Duration::from_millis(1500),
                function: "b".into(),
                duration: Duration::from_micros(2500),
                memory_mb: None,
            },
        ];
        assert_eq!(parse(&write(&calls)).unwrap(), calls);
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            parse("0,a\n"),
            Err(TraceError::Malformed {
                line: 1,
                text: "0,a".into()
            })
        );
        assert!(matches!(
            parse("10,a,1\n5,a,1\n"),
            Err(TraceError::Unsorted { line: 2, .. })
        ));
    }
}
