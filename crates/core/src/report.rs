//! The log lines every invocation writes, exactly as Lambda writes them, so that tools that
//! parse Lambda logs (and people who read them) find what they expect.

/// What one invocation cost, for its `REPORT` line.
#[derive(Debug, Clone, PartialEq)]
pub struct Report<'a> {
    pub request_id: &'a str,
    /// Handler time: event handed over → outcome received, in ms.
    pub duration_ms: f64,
    pub memory_mb: u32,
    pub max_memory_used_mb: u64,
    /// Present on cold starts: process start → first `/next`, in ms.
    pub init_duration_ms: Option<f64>,
}

impl Report<'_> {
    /// Billed duration: the duration rounded up to the next whole millisecond.
    pub fn billed_ms(&self) -> u64 {
        (self.duration_ms.ceil() as u64).max(1)
    }
}

/// Built in one allocation of its size, as are the other lines: each is written on every
/// invocation.
pub fn start_line(request_id: &str, version: &str) -> String {
    ["START RequestId: ", request_id, " Version: ", version, "\n"].concat()
}

pub fn end_line(request_id: &str) -> String {
    let mut line = String::with_capacity(16 + request_id.len());
    push_end_line(&mut line, request_id);
    line
}

/// Appends the `END` line to `out`: an invocation's last lines are built in one buffer.
pub fn push_end_line(out: &mut String, request_id: &str) {
    out.push_str("END RequestId: ");
    out.push_str(request_id);
    out.push('\n');
}

pub fn report_line(r: &Report) -> String {
    let mut line = String::with_capacity(160 + r.request_id.len());
    push_report_line(&mut line, r);
    line
}

/// Appends the `REPORT` line to `out`. Its numbers are written with `itoa`: the
/// formatter's machinery (a float with a precision, above all) cost more than the rest of
/// an invocation's log lines.
pub fn push_report_line(line: &mut String, r: &Report) {
    let mut digits = itoa::Buffer::new();
    let mut number = |line: &mut String, n: u64| line.push_str(digits.format(n));
    line.push_str("REPORT RequestId: ");
    line.push_str(r.request_id);
    line.push_str("\tDuration: ");
    push_ms(line, r.duration_ms);
    line.push_str(" ms\tBilled Duration: ");
    number(line, r.billed_ms());
    line.push_str(" ms\tMemory Size: ");
    number(line, u64::from(r.memory_mb));
    line.push_str(" MB\tMax Memory Used: ");
    number(line, r.max_memory_used_mb);
    line.push_str(" MB");
    if let Some(init) = r.init_duration_ms {
        line.push_str("\tInit Duration: ");
        push_ms(line, init);
        line.push_str(" ms");
    }
    line.push('\n');
}

/// Milliseconds with two decimals, rounded to the nearest hundredth.
fn push_ms(line: &mut String, ms: f64) {
    let hundredths = (ms.max(0.0) * 100.0).round() as u64;
    line.push_str(itoa::Buffer::new().format(hundredths / 100));
    line.push('.');
    let fraction = hundredths % 100;
    line.push(char::from(b'0' + (fraction / 10) as u8));
    line.push(char::from(b'0' + (fraction % 10) as u8));
}

/// The message of a timed-out invocation.
pub fn timeout_message(timeout_s: u32) -> String {
    format!("Task timed out after {timeout_s}.00 seconds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_line_matches_lambda_format() {
        let r = Report {
            request_id: "abc",
            duration_ms: 12.341,
            memory_mb: 128,
            max_memory_used_mb: 41,
            init_duration_ms: Some(87.649),
        };
        assert_eq!(
            report_line(&r),
            "REPORT RequestId: abc\tDuration: 12.34 ms\tBilled Duration: 13 ms\tMemory Size: 128 MB\tMax Memory Used: 41 MB\tInit Duration: 87.65 ms\n"
        );
        let warm = Report {
            init_duration_ms: None,
            duration_ms: 0.2,
            ..r
        };
        assert!(report_line(&warm).contains("Billed Duration: 1 ms\tMemory Size"));
        assert!(!report_line(&warm).contains("Init Duration"));
        // Hundredths are rounded, and a whole number still shows two decimals.
        let round = Report {
            duration_ms: 0.996,
            init_duration_ms: Some(5.0),
            ..warm.clone()
        };
        let line = report_line(&round);
        assert!(line.contains("\tDuration: 1.00 ms\t"), "{line}");
        assert!(line.contains("\tInit Duration: 5.00 ms\n"), "{line}");
        let tiny = Report {
            duration_ms: 0.004,
            ..warm
        };
        assert!(report_line(&tiny).contains("\tDuration: 0.00 ms\t"));
    }

    #[test]
    fn timeout_message_has_two_decimals() {
        assert_eq!(timeout_message(3), "Task timed out after 3.00 seconds");
    }
}
