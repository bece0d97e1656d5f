//! `ember stats`, `ember usage` and `ember events`: what the server counted, for a person
//! to read.

use hyper::Method;
use serde_json::Value;

use crate::Endpoint;
use crate::client::Client;
use crate::commands::print_table;

#[derive(clap::Args)]
pub struct StatsArgs {
    /// One function; all if absent.
    name: Option<String>,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

#[derive(clap::Args)]
pub struct UsageArgs {
    /// One function; all if absent.
    name: Option<String>,
    /// Days to cover, today included.
    #[arg(long, default_value_t = 30)]
    days: u32,
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

#[derive(clap::Args)]
pub struct EventsArgs {
    /// Print the server's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

pub async fn events(args: EventsArgs) -> anyhow::Result<()> {
    let body = get(&args.endpoint, "/ember/v1/events").await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let rows = body["Functions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            [
                f["Function"].as_str().unwrap_or("").to_owned(),
                number(&f["Queued"]).to_string(),
                number(&f["Retrying"]).to_string(),
                number(&f["Running"]).to_string(),
                number(&f["Failed"]).to_string(),
                f["OldestAgeSeconds"]
                    .as_f64()
                    .map_or("-".into(), |s| format!("{s:.1} s")),
            ]
        })
        .collect();
    print_table(
        &[
            "FUNCTION", "QUEUED", "RETRYING", "RUNNING", "FAILED", "OLDEST",
        ],
        rows,
    )?;
    Ok(())
}

async fn get(endpoint: &Endpoint, path: &str) -> anyhow::Result<Value> {
    let client = Client::new(&endpoint.endpoint);
    let answer = client.call(Method::GET, path, &[], vec![]).await?;
    Ok(serde_json::from_slice(&answer.body)?)
}

/// A row of block characters, one per value, scaled to the largest.
fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| match (v, max) {
            (0, _) => ' ',
            (v, max) => BARS[((v * 7).div_ceil(max)) as usize],
        })
        .collect()
}

fn price(v: &Value) -> String {
    v.as_f64().unwrap_or(0.0).to_string()
}

fn number(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

pub async fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let path = match &args.name {
        Some(name) => format!("/ember/v1/stats?Function={name}"),
        None => "/ember/v1/stats".into(),
    };
    let body = get(&args.endpoint, &path).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let slot = number(&body["SlotSeconds"]);
    let rows = body["Functions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let envs = &f["Environments"];
            let history: Vec<u64> = f["Concurrency"]
                .as_array()
                .into_iter()
                .flatten()
                .map(number)
                .collect();
            let peak = history.iter().copied().max().unwrap_or(0);
            [
                f["Function"].as_str().unwrap_or("").to_owned(),
                number(&f["Invocations"]).to_string(),
                number(&f["Errors"]).to_string(),
                number(&f["Throttles"]).to_string(),
                number(&f["ColdStarts"]).to_string(),
                format!(
                    "{}/{}/{}/{}",
                    number(&envs["Busy"]),
                    number(&envs["Idle"]),
                    number(&envs["Provisioned"]),
                    number(&envs["Initializing"])
                ),
                f["ReservedConcurrency"]
                    .as_u64()
                    .map_or("-".into(), |n| n.to_string()),
                number(&f["ConcurrentExecutions"]).to_string(),
                peak.to_string(),
                format!("|{}|", sparkline(&history)),
            ]
        })
        .collect();
    print_table(
        &[
            "FUNCTION",
            "INVOCATIONS",
            "ERRORS",
            "THROTTLES",
            "COLD",
            "ENVS B/I/P/S",
            "RESERVED",
            "NOW",
            "PEAK",
            "CONCURRENCY",
        ],
        rows,
    )?;
    println!(
        "\nCounts since the server started. ENVS: busy/idle/provisioned idle/starting. \
         CONCURRENCY: peak per {slot} s over the last 15 minutes, newest right."
    );
    Ok(())
}

pub async fn usage(args: UsageArgs) -> anyhow::Result<()> {
    let mut path = format!("/ember/v1/usage?Days={}", args.days);
    if let Some(name) = &args.name {
        path.push_str(&format!("&Function={name}"));
    }
    let body = get(&args.endpoint, &path).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let row = |u: &Value, function: &str, version: &str, day: &str| {
        [
            function.to_owned(),
            version.to_owned(),
            day.to_owned(),
            number(&u["Requests"]).to_string(),
            number(&u["BilledMs"]).to_string(),
            format!("{:.4}", u["GbSeconds"].as_f64().unwrap_or(0.0)),
            format!(
                "{:.4}",
                u["ProvisionedGbSeconds"].as_f64().unwrap_or(0.0)
                    + u["ProvisionedDurationGbSeconds"].as_f64().unwrap_or(0.0)
            ),
            format!("${:.6}", u["Cost"].as_f64().unwrap_or(0.0)),
        ]
    };
    let mut rows: Vec<[String; 8]> = body["Usage"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            row(
                u,
                u["Function"].as_str().unwrap_or(""),
                u["Version"].as_str().unwrap_or(""),
                u["Day"].as_str().unwrap_or(""),
            )
        })
        .collect();
    rows.push(row(&body["Total"], "TOTAL", "", ""));
    print_table(
        &[
            "FUNCTION",
            "VERSION",
            "DAY",
            "REQUESTS",
            "BILLED MS",
            "GB-S",
            "PROVISIONED GB-S",
            "COST",
        ],
        rows,
    )?;
    let prices = &body["Prices"];
    println!(
        "\nSince {} (UTC). Prices: ${} per 1M requests, ${} per GB-s, provisioned ${} per GB-s \
         configured and ${} per GB-s of duration.",
        body["Since"].as_str().unwrap_or(""),
        price(&prices["PerMillionRequests"]),
        price(&prices["PerGbSecond"]),
        price(&prices["ProvisionedPerGbSecond"]),
        price(&prices["ProvisionedDurationPerGbSecond"])
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_peak_and_leave_idle_slots_blank() {
        assert_eq!(sparkline(&[0, 1, 2, 4]), " ▃▅█");
        assert_eq!(sparkline(&[0, 0]), "  ");
    }
}
