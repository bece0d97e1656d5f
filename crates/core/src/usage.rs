//! Usage and its cost: what each function version used per day, and the price table that
//! turns it into money.
//!
//! Billed like Lambda: every invocation is a request; its billed duration (the REPORT
//! line's `Billed Duration`: the handler's duration rounded up to the millisecond) is
//! multiplied by the function's memory in GB. Invocations that ran on a provisioned environment are priced at the provisioned
//! duration rate, and the provisioned environments themselves cost their memory for as
//! long as they are configured, busy or not.

use serde::{Deserialize, Serialize};

/// Prices in dollars; the defaults are Lambda's on-demand x86 prices.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Prices {
    /// Per million requests.
    pub per_million_requests: f64,
    /// Per GB-second of on-demand duration.
    pub per_gb_second: f64,
    /// Per GB-second that provisioned environments are configured.
    pub provisioned_per_gb_second: f64,
    /// Per GB-second of duration on provisioned environments.
    pub provisioned_duration_per_gb_second: f64,
}

impl Default for Prices {
    fn default() -> Self {
        Prices {
            per_million_requests: 0.20,
            per_gb_second: 0.000_016_666_7,
            provisioned_per_gb_second: 0.000_004_166_7,
            provisioned_duration_per_gb_second: 0.000_009_722_2,
        }
    }
}

/// What one function version used on one day (UTC), or a sum of such.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Usage {
    pub requests: u64,
    /// Billed milliseconds over all invocations.
    pub billed_ms: u64,
    /// On-demand duration × memory.
    pub gb_seconds: f64,
    /// Duration × memory of invocations on provisioned environments.
    pub provisioned_duration_gb_seconds: f64,
    /// Time × memory of provisioned environments, busy or idle.
    pub provisioned_gb_seconds: f64,
}

impl Usage {
    /// One invocation billed `billed_ms` on `memory_mb`.
    pub fn invocation(billed_ms: u64, memory_mb: u32, provisioned: bool) -> Usage {
        let gb_seconds = billed_ms as f64 / 1000.0 * f64::from(memory_mb) / 1024.0;
        let (on_demand, on_provisioned) = if provisioned {
            (0.0, gb_seconds)
        } else {
            (gb_seconds, 0.0)
        };
        Usage {
            requests: 1,
            billed_ms,
            gb_seconds: on_demand,
            provisioned_duration_gb_seconds: on_provisioned,
            provisioned_gb_seconds: 0.0,
        }
    }

    pub fn add(&mut self, other: &Usage) {
        self.requests += other.requests;
        self.billed_ms += other.billed_ms;
        self.gb_seconds += other.gb_seconds;
        self.provisioned_duration_gb_seconds += other.provisioned_duration_gb_seconds;
        self.provisioned_gb_seconds += other.provisioned_gb_seconds;
    }

    /// What this usage costs, in dollars.
    pub fn cost(&self, prices: &Prices) -> f64 {
        self.requests as f64 / 1e6 * prices.per_million_requests
            + self.gb_seconds * prices.per_gb_second
            + self.provisioned_duration_gb_seconds * prices.provisioned_duration_per_gb_second
            + self.provisioned_gb_seconds * prices.provisioned_per_gb_second
    }
}

/// Usage of one function version on one day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DayUsage {
    pub function: String,
    /// `$LATEST` or a version number.
    pub version: String,
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    #[serde(flatten)]
    pub usage: Usage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billed_duration_is_priced_by_memory() {
        let u = Usage::invocation(2, 1024, false);
        assert_eq!(u.billed_ms, 2);
        assert!((u.gb_seconds - 0.002).abs() < 1e-12);
        assert_eq!(u.provisioned_duration_gb_seconds, 0.0);
        let p = Usage::invocation(1000, 512, true);
        assert_eq!(p.gb_seconds, 0.0);
        assert!((p.provisioned_duration_gb_seconds - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_million_one_second_calls_at_1_gb_cost_what_lambda_charges() {
        let mut total = Usage::default();
        let one = Usage::invocation(1000, 1024, false);
        for _ in 0..1000 {
            total.add(&one);
        }
        // 1,000 calls: $0.0002 for requests, 1,000 GB-s at $0.0000166667.
        let cost = total.cost(&Prices::default());
        assert!((cost - (0.0002 + 0.0166667)).abs() < 1e-9, "{cost}");
    }
}
