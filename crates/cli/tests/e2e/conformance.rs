//! The backend conformance suite: the behaviours every sandbox backend (`process`, `runc`,
//! `gvisor`) must show a function, run once per backend through the real server.
//!
//! Most checks live beside the process-level tests of the same subject (`failures`,
//! `isolation`, `lifecycle`) as functions taking the isolation; this module lists them once
//! and instantiates the list for each backend, and adds the checks that only make sense
//! here. A backend whose runtime program is missing skips, saying so; CI installs them all.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::require_backend;
use crate::support::{Server, zip_files};

/// One `#[tokio::test]` per check, for the backend `$isolation`.
macro_rules! checks {
    ($isolation:literal; $($module:ident :: $check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $check() {
                crate::$module::$check($isolation).await;
            }
        )*
    };
}

/// The suite, for one backend.
macro_rules! suite {
    ($isolation:literal) => {
        checks!(
            $isolation;
            conformance::starts_answers_and_stays_warm,
            conformance::destroyed_environments_leave_nothing_behind,
            conformance::environments_start_from_ember_alone_where_ember_init_is_missing,
            failures::a_handler_exception_is_a_handled_error_and_keeps_the_environment,
            failures::a_timeout_kills_the_environment_and_reports_unhandled,
            failures::a_crashing_runtime_is_unhandled_and_the_next_call_starts_cold,
            failures::running_out_of_memory_is_reported_as_killed_and_only_hurts_the_function,
            failures::init_failures_report_the_runtime_error_type,
            isolation::a_function_sees_only_its_own_processes,
            isolation::a_function_runs_unprivileged_without_capabilities,
            isolation::a_function_runs_on_every_core_of_the_server,
            isolation::code_and_root_are_read_only_and_tmp_is_bounded_by_ephemeral_storage,
            isolation::a_function_cannot_see_the_data_directory_or_another_functions_code_or_tmp,
            isolation::a_function_has_only_loopback_and_cannot_reach_the_ember_api,
            isolation::a_fork_bomb_is_stopped_at_the_pids_limit_and_hurts_only_its_environment,
            isolation::the_seccomp_filter_refuses_what_a_function_never_needs,
            isolation::egress_reaches_the_host_but_not_ember_or_other_environments,
            lifecycle::frozen_idle_environments_run_nothing_between_invocations,
        );
    };
}

mod process {
    suite!("process");
}

mod runc {
    suite!("runc");
}

mod gvisor {
    suite!("gvisor");
}

/// The environments' helpers (init, reaper, shim) come from `ember-init` beside `ember`;
/// a server copied without it starts them from `ember` itself, and functions run the same.
pub async fn environments_start_from_ember_alone_where_ember_init_is_missing(
    isolation: &'static str,
) {
    require_backend!(isolation);
    let alone = tempfile::tempdir().unwrap();
    let ember = alone.path().join("ember");
    std::fs::copy(crate::support::EMBER, &ember).unwrap();
    let beside = Server::start(&[]);
    let solo = Server::start_program(&ember, &alone.path().join("data"), &[]);
    let mut first = Vec::new();
    for server in [&beside, &solo] {
        let api = server.api();
        api.create_kitchen_on(isolation, "helpers", json!({})).await;
        let r = api.invoke("helpers", json!({ "action": "pid1" })).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let argv = r.json()["argv"].clone();
        let argv: Vec<String> = serde_json::from_value(argv).unwrap();
        first.push(argv[..2].to_vec());
    }
    if isolation == "process" {
        // PID 1 is the init's fork: its command line names the program it came from.
        assert!(first[0][0].ends_with("/ember-init"), "{first:?}");
        assert!(first[1][0].ends_with("/ember"), "{first:?}");
        assert_eq!(first[0][1], "sandbox-init");
        assert_eq!(first[1][1], "sandbox-init");
    } else {
        // Both mounted at the same place in the container, as its reaper.
        assert_eq!(first[0], ["/.ember/init", "sandbox-reaper"], "{first:?}");
        assert_eq!(first[1], first[0]);
    }
}

/// Start, invoke, warm reuse, environment variables and log capture.
pub async fn starts_answers_and_stays_warm(isolation: &'static str) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen_on(
        isolation,
        "warm",
        json!({ "Environment": { "Variables": { "GREETING": "hello" } } }),
    )
    .await;
    let first = api.invoke_tail("warm", json!({ "n": 1 })).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let body = first.json();
    assert_eq!(body["event"], json!({ "n": 1 }));
    assert_eq!(body["greeting"], "hello");
    assert_eq!(body["task_root"], "/var/task");
    assert_eq!(body["runtime_api"], "127.0.0.1:9001");
    assert!(
        first.log_tail().contains("Init Duration"),
        "{}",
        first.log_tail()
    );
    let second = api
        .invoke_tail(
            "warm",
            json!({ "action": "print", "text": "a line of output" }),
        )
        .await;
    let log = second.log_tail();
    assert!(log.contains("a line of output"), "{log}");
    assert!(log.contains("START RequestId"), "{log}");
    assert!(log.contains("Max Memory Used"), "{log}");
    assert!(
        !log.contains("Init Duration"),
        "the second call was not warm: {log}"
    );
    let third = api.invoke("warm", json!({})).await.json();
    assert_eq!(
        third["env_id"], body["env_id"],
        "the environment was not reused"
    );
    assert_eq!(third["count"], 3);
}

/// How many environments the leak check creates and destroys, per backend: at least a
/// thousand where an environment costs milliseconds; fewer where a start costs more.
fn leak_rounds(isolation: &str) -> usize {
    match isolation {
        "process" => 1000,
        "runc" => 300,
        _ => 40,
    }
}

/// Creating and destroying many environments leaves no process, mount, cgroup, network
/// namespace or runtime state behind.
pub async fn destroyed_environments_leave_nothing_behind(isolation: &'static str) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    // A runtime that exits at once: every call starts an environment, sees it fail its
    // init, and destroys it.
    let zip = zip_files(&[("bootstrap", b"#!/bin/sh\nexit 0\n", 0o755)]);
    let r = api
        .create(
            "ephemeral",
            &zip,
            json!({ "Runtime": "provided.al2023", "Handler": "x" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    api.isolate("ephemeral", isolation).await;
    // And a working function, to see the platform still answering afterwards.
    api.create_kitchen_on(isolation, "steady", json!({})).await;
    let mounts_before = mounts_of(&server);

    let rounds = leak_rounds(isolation);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move {
                for _ in 0..rounds / 2 {
                    let r = api.invoke("ephemeral", json!({})).await;
                    assert_eq!(r.status, 200, "{}", r.text());
                    assert_eq!(r.json()["errorType"], "Runtime.ExitError", "{}", r.text());
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(api.invoke("steady", json!({})).await.status, 200);
    let r = api
        .request(
            hyper::Method::DELETE,
            "/2015-03-31/functions/steady",
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 204);

    assert_eq!(
        server.wait_cgroups(0, Duration::from_secs(20)).await,
        0,
        "environment cgroups were left behind"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut left = descendants(server.pid());
    while !left.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = descendants(server.pid());
    }
    assert!(left.is_empty(), "processes were left behind: {left:?}");
    let namespaces = open_network_namespaces(server.pid());
    assert_eq!(
        namespaces, 0,
        "the server still holds {namespaces} network namespaces"
    );
    assert_eq!(
        mounts_of(&server),
        mounts_before,
        "mounts were left behind in the server's mount namespace"
    );
    if isolation != "process" {
        let dir = server.data_dir.join(format!("sandbox-{isolation}"));
        for sub in ["state", "bundles"] {
            let entries: Vec<_> = std::fs::read_dir(dir.join(sub))
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default();
            assert!(entries.is_empty(), "{sub} still holds {entries:?}");
        }
    }
}

/// Every process below `pid`, with its command.
fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut parent = HashMap::new();
    let mut name = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some((comm, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let ppid = rest.split(' ').nth(1).and_then(|v| v.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.insert(p, ppid);
            name.insert(p, comm.split_once(" (").map_or("", |c| c.1).to_owned());
        }
    }
    let mut found = Vec::new();
    for (&p, _) in parent.iter() {
        let mut at = p;
        while let Some(&up) = parent.get(&at) {
            if up == pid {
                found.push((p, name[&p].clone()));
                break;
            }
            if up <= 1 {
                break;
            }
            at = up;
        }
    }
    found
}

fn open_network_namespaces(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("net:["))
        })
        .count()
}

/// Mounts in the server's mount namespace under its data directory: where any mount the
/// server made there (bundles, root filesystems) would be. Other tests running at the same
/// time add and remove mounts of their own elsewhere in that namespace (`ip netns`, their
/// own servers), so the namespace's total is not this server's doing.
fn mounts_of(server: &Server) -> usize {
    let dir = server.data_dir.to_string_lossy().into_owned();
    std::fs::read_to_string(format!("/proc/{}/mountinfo", server.pid()))
        .unwrap()
        .lines()
        .filter(|line| line.contains(&dir))
        .count()
}
