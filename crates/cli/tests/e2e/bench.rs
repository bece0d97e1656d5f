//! `ember bench`, the one command behind the benchmark report, run small.

use std::process::Command;

use crate::require_sandbox;
use crate::support::EMBER;

#[test]
fn one_command_writes_the_results_the_report_and_its_charts() {
    require_sandbox!();
    let out = tempfile::tempdir().unwrap();
    let docs = out.path().join("docs");
    let run = Command::new(EMBER)
        .args([
            "bench",
            "--warm",
            "20",
            "--cold",
            "1",
            "--seconds",
            "0.2",
            "--settle",
            "0",
        ])
        .arg("--out")
        .arg(out.path())
        .arg("--publish")
        .arg(&docs)
        .arg("--peers")
        .arg(out.path().join("no-peers"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let dir = std::fs::read_dir(out.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("results.json").exists())
        .expect("no run directory with a results.json");

    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap();
    let runtimes: Vec<&str> = results["runtimes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["runtime"].as_str().unwrap())
        .collect();
    assert_eq!(runtimes, ["provided", "python3", "nodejs", "wasm"]);
    for r in results["runtimes"].as_array().unwrap() {
        for figure in ["hello", "hello_loaded", "cpu", "echo_1mb"] {
            assert!(r[figure]["p50_us"].as_f64().unwrap() > 0.0, "{figure}: {r}");
        }
        // 10 ms of CPU cannot answer in less.
        assert!(r["cpu"]["p50_us"].as_f64().unwrap() >= 10_000.0, "{r}");
        assert_eq!(r["rates"].as_array().unwrap().len(), 3);
    }
    // Every cold start is split into its stages, and init dominates a process cold start.
    for c in results["cold"].as_array().unwrap() {
        let s = &c["stages"];
        let init = s["sandbox_us"].as_f64().unwrap() + s["runtime_init_us"].as_f64().unwrap();
        assert!(init > 0.0, "{c}");
        assert!(c["baseline_us"].as_f64().unwrap() > 0.0, "{c}");
        // The median of each cold start over the bare start taken right after it.
        assert!(c["ratio"].as_f64().is_some_and(|r| r > 0.0), "{c}");
    }
    // Each burst beside the same hundred starts with no platform.
    for s in results["scale_out"].as_array().unwrap() {
        assert_eq!(s["environments"], 100, "{s}");
        assert!(s["baseline_ms"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["ratio"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["baseline"].as_str().unwrap().contains("100"), "{s}");
    }
    assert_eq!(results["density"].as_array().unwrap().len(), 4);
    assert_eq!(results["load"]["points"].as_array().unwrap().len(), 5);
    // The peers were not installed there: said so, the rest measured.
    let skipped = results["skipped"].to_string();
    assert!(
        skipped.contains("workerd") && skipped.contains("deno"),
        "{skipped}"
    );
    assert!(results["headline"].as_object().unwrap().len() > 10);
    // The function URL on one core with the generator on another: measured even without
    // workerd, wherever the bench may use two cores.
    let cores = std::thread::available_parallelism().unwrap().get();
    if cores >= 2 {
        let one_core = &results["peers"]["one_core"];
        assert!(one_core["url_rps"].as_f64().unwrap() > 0.0, "{one_core}");
        assert!(one_core["workerd_rps"].is_null(), "{one_core}");
    } else {
        eprintln!("one core here: the one-core-each figure is said to be not measured");
        assert!(skipped.contains("two cores"), "{skipped}");
    }

    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for chart in [
        "latency",
        "throughput",
        "cold",
        "scale-out",
        "density",
        "load",
    ] {
        assert!(report.contains(&format!("({chart}.svg)")), "{chart}");
        let svg = std::fs::read_to_string(dir.join(format!("{chart}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<rect"), "{chart}");
        assert!(docs.join(format!("benchmarks/{chart}.svg")).exists());
    }
    let published = std::fs::read_to_string(docs.join("benchmarks.md")).unwrap();
    assert!(published.contains("(benchmarks/cold.svg)"));
}
