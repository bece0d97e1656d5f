//! What a function can and cannot reach.

use serde_json::json;

use crate::support::Server;
use crate::{require_backend, require_sandbox};

pub async fn a_function_sees_only_its_own_processes(isolation: &'static str) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen_on(isolation, "procs", json!({})).await;
    let pids = api
        .invoke("procs", json!({ "action": "procs" }))
        .await
        .json()["pids"]
        .clone();
    // Ember's init is PID 1 and the runtime the only other process; nothing of the host
    // is visible.
    let pids = pids.as_array().unwrap();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert_eq!(pids[0], 1, "{pids:?}");
}

pub async fn a_function_runs_unprivileged_without_capabilities(isolation: &'static str) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen_on(isolation, "who", json!({})).await;
    let id = api
        .invoke("who", json!({ "action": "identity" }))
        .await
        .json();
    assert_ne!(id["uid"], 0);
    assert_ne!(id["gid"], 0);
    assert_eq!(id["cap_eff"], "0000000000000000");
    assert_eq!(id["cap_bnd"], "0000000000000000");
    assert_eq!(id["no_new_privs"], "1");
}

/// The server's async workers are bound to a core each; a function's runtime, started from
/// one of them, still runs on every core the server was given.
pub async fn a_function_runs_on_every_core_of_the_server(isolation: &'static str) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let cores = cores_of(&format!("/proc/{}/status", server.pid()));
    // Each worker binds itself as it first goes idle, just after the server starts.
    let bound = || {
        let mut bound: Vec<usize> = std::fs::read_dir(format!("/proc/{}/task", server.pid()))
            .unwrap()
            .flatten()
            .map(|task| cores_of(&task.path().join("status").to_string_lossy()))
            .filter_map(|cores| (cores.len() == 1).then(|| cores[0]))
            .collect();
        bound.sort();
        bound
    };
    // The server binds its workers only with one worker per core (as this test process would
    // have: the same cores, the same CPU quota).
    let workers = std::thread::available_parallelism().map_or(0, |n| n.get());
    if cores.len() > 1
        && workers == cores.len()
        && std::env::var_os("TOKIO_WORKER_THREADS").is_none()
    {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while bound() != cores && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(
            bound(),
            cores,
            "one worker bound to each of the server's cores"
        );
    } else {
        eprintln!(
            "the server has {} cores and {workers} workers: no worker is bound, so the binding \
             is not checked here",
            cores.len()
        );
    }
    let api = server.api();
    api.create_kitchen_on(isolation, "cores", json!({})).await;
    let seen = api
        .invoke("cores", json!({ "action": "cores" }))
        .await
        .json();
    assert_eq!(seen["cores"], cores.len(), "{seen}");
}

/// The cores a `/proc/…/status` file allows.
fn cores_of(status: &str) -> Vec<usize> {
    let status = std::fs::read_to_string(status).unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    list.split(',')
        .flat_map(|range| match range.split_once('-') {
            Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<usize>>(),
            None => vec![range.parse().unwrap()],
        })
        .collect()
}

pub async fn code_and_root_are_read_only_and_tmp_is_bounded_by_ephemeral_storage(
    isolation: &'static str,
) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen_on(
        isolation,
        "fs",
        json!({ "MemorySize": 2048, "Timeout": 60, "EphemeralStorage": { "Size": 512 } }),
    )
    .await;
    const EROFS: i64 = 30;
    const EACCES: i64 = 13;
    const ENOSPC: i64 = 28;
    for path in ["/var/task/x", "/x", "/usr/x", "/etc/x", "/var/runtime/x"] {
        let r = api
            .invoke("fs", json!({ "action": "write", "path": path }))
            .await
            .json();
        assert!(r["errno"].as_i64().is_some(), "{path} was writable: {r}");
        if path == "/var/task/x" {
            // gVisor checks the directory's owner before the mount's read-only flag.
            assert!(
                [EROFS, EACCES].contains(&r["errno"].as_i64().unwrap()),
                "{path}: {r}"
            );
        }
    }
    assert_eq!(
        api.invoke("fs", json!({ "action": "write", "path": "/tmp/ok" }))
            .await
            .json(),
        json!({ "written": true })
    );
    let filled = api
        .invoke("fs", json!({ "action": "fill_tmp" }))
        .await
        .json();
    assert_eq!(filled["errno"], ENOSPC, "{filled}");
    assert!(filled["written_mb"].as_u64().unwrap() <= 512, "{filled}");
}

pub async fn a_function_cannot_see_the_data_directory_or_another_functions_code_or_tmp(
    isolation: &'static str,
) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen_on(isolation, "a", json!({})).await;
    // Another function, with its own package (so its own code directory).
    let other = crate::support::zip_files(&[(
        "other.py",
        b"SECRET = 1\ndef handler(e, c):\n    return 1\n",
        0o644,
    )]);
    assert_eq!(
        api.create(
            "b",
            &other,
            json!({ "Runtime": "python3", "Handler": "other.handler" })
        )
        .await
        .status,
        201
    );
    // A third function leaves a file in its own /tmp.
    api.create_kitchen_on(isolation, "c", json!({})).await;
    let wrote = api
        .invoke(
            "c",
            json!({ "action": "write", "path": "/tmp/secret-of-c" }),
        )
        .await
        .json();
    assert_eq!(wrote, json!({ "written": true }));
    let data = server.data_dir.canonicalize().unwrap();
    let code_root = data.join("artifacts/code");
    let other_code = std::fs::read_dir(&code_root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("other.py").exists())
        .expect("b's code directory");
    let paths = [
        data.display().to_string(),
        data.join("ember.db").display().to_string(),
        other_code.join("other.py").display().to_string(),
        "/root".to_owned() + "/.cargo",
        "/proc/1/root/root/.cargo".to_owned(),
        "/tmp/secret-of-c".to_owned(),
    ];
    let seen = api
        .invoke("a", json!({ "action": "exists", "paths": paths }))
        .await
        .json();
    for path in &paths {
        assert_eq!(
            seen[path], false,
            "{path} is visible inside the sandbox: {seen}"
        );
    }
    // Its own code is there, and only its own.
    assert_eq!(
        api.invoke("a", json!({ "action": "listdir", "path": "/var/task" }))
            .await
            .json(),
        json!(["app.py"])
    );
}

pub async fn a_function_has_only_loopback_and_cannot_reach_the_ember_api(isolation: &'static str) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    let source = format!(
        "import socket\ndef handler(e, c):\n    names = [l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]]\n    try:\n        socket.create_connection(('127.0.0.1', {port}), timeout=1).close()\n        api = 'connected'\n    except OSError as err:\n        api = err.__class__.__name__\n    return {{'interfaces': names, 'ember_api': api}}\n",
        port = server.url.rsplit(':').next().unwrap()
    );
    let zip = crate::support::zip_files(&[("app.py", source.as_bytes(), 0o644)]);
    assert_eq!(
        api.create(
            "net",
            &zip,
            json!({ "Runtime": "python3", "Handler": "app.handler" })
        )
        .await
        .status,
        201
    );
    api.isolate("net", isolation).await;
    let r = api.invoke("net", json!({})).await.json();
    assert_eq!(r["interfaces"], json!(["lo"]), "{r}");
    assert_eq!(r["ember_api"], "ConnectionRefusedError", "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_is_proportional_to_memory() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("small", json!({ "MemorySize": 128, "Timeout": 10 }))
        .await;
    api.create_kitchen("large", json!({ "MemorySize": 1769, "Timeout": 10 }))
        .await;
    let spin = json!({ "action": "spin", "seconds": 1.0 });
    let small = api.invoke("small", spin.clone()).await.json()["cpu_share"]
        .as_f64()
        .unwrap();
    let large = api.invoke("large", spin).await.json()["cpu_share"]
        .as_f64()
        .unwrap();
    // 128 MB buys 128/1769 = 7 % of a core; 1769 MB a whole one.
    assert!(small < 0.2, "a 128 MB function used {small:.2} of a core");
    assert!(
        large > 2.0 * small,
        "1769 MB got {large:.2} of a core, 128 MB {small:.2}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pids_limit_stops_runaway_thread_creation_inside_the_function() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("threads", json!({ "MemorySize": 1024, "Timeout": 30 }))
        .await;
    let r = api
        .invoke("threads", json!({ "action": "threads", "count": 5000 }))
        .await;
    assert_eq!(r.header("x-amz-function-error"), None, "{}", r.text());
    let started = r.json()["started"].as_u64().unwrap();
    assert!((100..1024).contains(&started), "started {started} threads");
    // The environment is still usable afterwards.
    assert_eq!(api.invoke("threads", json!({})).await.status, 200);
}

pub async fn a_fork_bomb_is_stopped_at_the_pids_limit_and_hurts_only_its_environment(
    isolation: &'static str,
) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen_on(
        isolation,
        "bomb",
        json!({ "MemorySize": 1024, "Timeout": 30 }),
    )
    .await;
    api.create_kitchen_on(isolation, "bystander", json!({}))
        .await;
    let r = api.invoke("bomb", json!({ "action": "fork_bomb" })).await;
    if isolation == "gvisor" {
        // gVisor's kernel does not count processes itself; the host's pids limit stops
        // the sandbox's own threads instead, which ends the environment.
        assert_eq!(
            r.header("x-amz-function-error"),
            Some("Unhandled"),
            "{}",
            r.text()
        );
    } else {
        let r = r.json();
        const EAGAIN: i64 = 11;
        assert_eq!(r["errno"], EAGAIN, "{r}");
        assert!(r["children"].as_u64().unwrap() < 1024, "{r}");
    }
    // The host, the server and other functions carry on; the function still answers.
    assert_eq!(api.invoke("bystander", json!({})).await.status, 200);
    assert_eq!(api.invoke("bomb", json!({})).await.status, 200);
    // Destroying the environment takes every child with it.
    assert_eq!(
        api.request(
            hyper::Method::DELETE,
            "/2015-03-31/functions/bomb",
            &[],
            bytes::Bytes::new()
        )
        .await
        .status,
        204
    );
    assert_eq!(
        server
            .wait_cgroups(1, std::time::Duration::from_secs(10))
            .await,
        1
    );
}

pub async fn the_seccomp_filter_refuses_what_a_function_never_needs(isolation: &'static str) {
    require_backend!(isolation);
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the probe uses x86_64 system call numbers");
        return;
    }
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen_on(isolation, "probe", json!({})).await;
    let response = api
        .invoke_tail("probe", json!({ "action": "syscalls" }))
        .await;
    let r = response.json();
    // Each refusal is named in the function's log.
    let log = response.log_tail();
    if isolation == "gvisor" {
        // gVisor's kernel has no seccomp user notifications: refusals are silent there.
    } else {
        for name in [
            "mount",
            "ptrace",
            "unshare",
            "setns",
            "bpf",
            "clone (with a namespace flag)",
        ] {
            assert!(
                log.contains(&format!("EMBER SANDBOX: refused {name} (pid ")),
                "{name} is not in the log: {log}"
            );
        }
    }
    const EPERM: i64 = 1;
    const ENOSYS: i64 = 38;
    for call in [
        "unshare_user",
        "setns",
        "ptrace_traceme",
        "keyctl",
        "bpf",
        "perf_event_open",
        "mount",
        "clone_newnet",
    ] {
        assert_eq!(r[call], EPERM, "{call}: {r}");
    }
    // clone3 says "not implemented", so libc falls back to clone (which the filter can read):
    // threads still start (see the ticker and pids tests).
    assert_eq!(r["clone3"], ENOSYS, "{r}");
}

/// A function with `Network: egress` that probes what it can reach.
const NET_PROBE: &str = r#"
import socket
import threading


def gateway():
    for line in open("/proc/net/route").read().splitlines()[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            return socket.inet_ntoa(bytes.fromhex(fields[2])[::-1])


def serve(server):
    while True:
        conn, _ = server.accept()
        conn.sendall(b"environment")
        conn.close()


def handler(event, context):
    if event.get("action") == "listen":
        server = socket.socket()
        server.bind(("0.0.0.0", 7000))
        server.listen()
        threading.Thread(target=serve, args=(server,), daemon=True).start()
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect((gateway(), 9))
        return {"address": probe.getsockname()[0]}
    out = {"gateway": gateway()}
    for host, port in event["targets"]:
        host = host or out["gateway"]
        try:
            conn = socket.create_connection((host, port), timeout=1)
            out[f"{host}:{port}"] = conn.recv(32).decode()
        except OSError as e:
            out[f"{host}:{port}"] = type(e).__name__
    return out
"#;

pub async fn egress_reaches_the_host_but_not_ember_or_other_environments(isolation: &'static str) {
    require_backend!(isolation);
    if let Some(why) = crate::support::egress_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    // A service on the host, as a database would be.
    let service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let service_port = service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in service.incoming().flatten() {
            use std::io::Write;
            let _ = (&conn).write_all(b"host service");
        }
    });
    let server = Server::start(&[]);
    let api = server.api();
    let api_port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let zip = crate::support::zip_files(&[("app.py", NET_PROBE.as_bytes(), 0o644)]);
    for name in ["a", "b", "closed"] {
        let r = api
            .create(
                name,
                &zip,
                // Each dropped connection waits out its one-second timeout.
                json!({ "Runtime": "python3", "Handler": "app.handler", "Timeout": 30 }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        api.isolate(name, isolation).await;
    }
    for name in ["a", "b"] {
        let r = api
            .request(
                hyper::Method::PUT,
                &format!("/ember/v1/functions/{name}/settings"),
                &[],
                r#"{"Network": "egress"}"#,
            )
            .await;
        assert_eq!(r.json()["Network"], "egress", "{}", r.text());
    }
    let listening = api.invoke("a", json!({ "action": "listen" })).await.json();
    let a_address = listening["address"].as_str().unwrap().to_owned();

    let b = api
        .invoke(
            "b",
            json!({ "targets": [
                [null, service_port],
                [null, api_port],
                [a_address, 7000],
                [a_address, 9001],
            ] }),
        )
        .await
        .json();
    let gateway = b["gateway"].as_str().expect("b has a route out").to_owned();
    assert_eq!(
        b[format!("{gateway}:{service_port}")],
        "host service",
        "{b}"
    );
    // Ember's API and the other environment are dropped, not merely closed.
    assert_eq!(b[format!("{gateway}:{api_port}")], "TimeoutError", "{b}");
    assert_eq!(b[format!("{a_address}:7000")], "TimeoutError", "{b}");
    // Nor its Runtime API, which listens on its own loopback anyway.
    assert_eq!(b[format!("{a_address}:9001")], "TimeoutError", "{b}");
    // Without egress: no route at all.
    let closed = api
        .invoke("closed", json!({ "targets": [["10.0.0.1", service_port]] }))
        .await
        .json();
    assert_eq!(closed["gateway"], serde_json::Value::Null, "{closed}");
    assert_eq!(
        closed[format!("10.0.0.1:{service_port}")],
        "OSError",
        "{closed}"
    );
}
