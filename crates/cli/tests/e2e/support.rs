//! Starting a real `ember server` and talking to it as a user would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

pub const EMBER: &str = env!("CARGO_BIN_EXE_ember");
pub const KITCHEN: &str = include_str!("fixtures/kitchen.py");
pub const BOOTSTRAP: &str = include_str!("fixtures/bootstrap.py");

/// Why the sandbox cannot run here, if it cannot.
pub fn sandbox_unavailable() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("the process sandbox needs root (namespaces, cgroups)");
    }
    if !Path::new("/usr/bin/python3").exists() {
        return Some("/usr/bin/python3 is missing (apt-get install python3)");
    }
    None
}

/// Why the sandbox backend `isolation` (process, runc, gvisor) cannot run here, if it cannot.
pub fn backend_unavailable(isolation: &str) -> Option<String> {
    if let Some(why) = sandbox_unavailable() {
        return Some(why.to_owned());
    }
    let program = match isolation {
        "process" => return None,
        "runc" => "runc",
        "gvisor" => "runsc",
        other => return Some(format!("unknown isolation {other}")),
    };
    let found = [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/sbin",
        "/usr/local/bin",
    ]
    .iter()
    .any(|dir| Path::new(dir).join(program).exists());
    (!found).then(|| format!("the {isolation} backend needs {program} (apt-get install {program})"))
}

/// Why functions cannot have network egress here, if they cannot.
pub fn egress_unavailable() -> Option<String> {
    let found = |name: &str| {
        ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|dir| Path::new(dir).join(name).exists())
    };
    if !found("nft") {
        return Some("egress needs nftables (apt-get install nftables)".into());
    }
    if !found("ip") {
        return Some("egress needs iproute2 (apt-get install iproute2)".into());
    }
    None
}

/// The names of the host's nftables tables.
pub fn nft_tables() -> Vec<String> {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("run nft");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect()
}

/// Returns early from a test, saying why, when `isolation`'s backend cannot run here.
#[macro_export]
macro_rules! require_backend {
    ($isolation:expr) => {
        if let Some(why) = $crate::support::backend_unavailable($isolation) {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// Returns early from a test, saying why, when the sandbox cannot run on this host.
#[macro_export]
macro_rules! require_sandbox {
    () => {
        if let Some(why) = $crate::support::sandbox_unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// A running `ember server` with its own data directory and port.
pub struct Server {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    /// Where the server keeps its environments' (memory) cgroups.
    cgroups: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut server = Server::start_in(&data_dir, args);
        server._temp = Some(temp);
        server
    }

    pub fn start_in(data_dir: &Path, args: &[&str]) -> Server {
        Server::start_program(Path::new(EMBER), data_dir, args)
    }

    /// A server run from `program`, a copy of `ember` (somewhere without `ember-init`).
    pub fn start_program(program: &Path, data_dir: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(program)
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("EMBER_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ember server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("the server did not start: {line:?}"))
            .to_owned();
        let cgroups = cgroup_dir(child.id(), data_dir);
        Server {
            child,
            url,
            data_dir: data_dir.to_owned(),
            cgroups,
            _temp: None,
        }
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url)
    }

    /// Stops the server the way an operator would (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }

    /// Kills the server outright (SIGKILL), as a crash or an OOM kill would, and waits.
    pub fn kill(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// Whether the server's instance cgroup directory exists.
    pub fn has_instance_cgroup(&self) -> bool {
        self.cgroups.exists()
    }

    /// How many environment cgroups this server has, over every backend: one per live
    /// environment.
    pub fn environment_cgroups(&self) -> usize {
        let entries = std::fs::read_dir(&self.cgroups)
            .unwrap_or_else(|e| panic!("{}: {e}", self.cgroups.display()));
        let mut dirs = entries.flatten().collect::<Vec<_>>();
        // The OCI backends' instances sit beside the process backend's.
        for isolation in ["runc", "gvisor"] {
            let mut name = self.cgroups.file_name().unwrap().to_owned();
            name.push(format!("-{isolation}"));
            if let Ok(entries) = std::fs::read_dir(self.cgroups.with_file_name(name)) {
                dirs.extend(entries.flatten());
            }
        }
        dirs.iter()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .count()
    }

    /// The name of the server's nftables table (egress): `ember_` and its instance hash.
    pub fn egress_table(&self) -> String {
        instance(&self.data_dir).replacen('-', "_", 1)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits, at most `limit`, until the server has `n` environment cgroups.
    pub async fn wait_cgroups(&self, n: usize, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let count = self.environment_cgroups();
            if count == n || tokio::time::Instant::now() > deadline {
                return count;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error type of an API error.
    pub fn error_type(&self) -> &str {
        self.header("x-amzn-errortype").unwrap_or("")
    }

    /// The decoded `X-Amz-Log-Result`.
    pub fn log_tail(&self) -> String {
        let raw = BASE64
            .decode(self.header("x-amz-log-result").expect("log tail"))
            .unwrap();
        String::from_utf8(raw).unwrap()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Clone)]
pub struct Api {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Response {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        // No call in these tests legitimately takes a minute: a hang fails the test.
        let response = tokio::time::timeout(Duration::from_secs(60), async {
            let response = self.client.request(req).await.expect("request");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            Response {
                status,
                headers,
                body,
            }
        })
        .await;
        response.unwrap_or_else(|_| panic!("{path} did not answer within a minute"))
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(Method::GET, path, &[], Bytes::new()).await
    }

    /// CreateFunction with `config` merged over the given code.
    pub async fn create(&self, name: &str, zip: &[u8], config: Value) -> Response {
        let mut body = json!({ "FunctionName": name, "Code": { "ZipFile": BASE64.encode(zip) } });
        merge(&mut body, config);
        self.request(
            Method::POST,
            "/2015-03-31/functions",
            &[],
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }

    /// Creates the kitchen-sink Python function; panics unless it is created.
    pub async fn create_kitchen(&self, name: &str, config: Value) {
        let zip = zip_files(&[("app.py", KITCHEN.as_bytes(), 0o644)]);
        let mut full = json!({ "Runtime": "python3.11", "Handler": "app.handler" });
        merge(&mut full, config);
        let r = self.create(name, &zip, full).await;
        assert_eq!(r.status, 201, "create {name}: {}", r.text());
    }

    /// Creates the kitchen-sink function on the sandbox backend `isolation`.
    pub async fn create_kitchen_on(&self, isolation: &str, name: &str, config: Value) {
        self.create_kitchen(name, config).await;
        self.isolate(name, isolation).await;
    }

    /// Moves a function to the sandbox backend `isolation`; panics unless that works.
    pub async fn isolate(&self, name: &str, isolation: &str) {
        let body = json!({ "Isolation": isolation });
        let r = self
            .request(
                Method::PUT,
                &format!("/ember/v1/functions/{name}/settings"),
                &[],
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        assert_eq!(r.status, 200, "isolate {name} on {isolation}: {}", r.text());
        assert_eq!(r.json()["Isolation"], isolation, "{}", r.text());
    }

    pub async fn update_configuration(&self, name: &str, config: Value) -> Response {
        let path = format!("/2015-03-31/functions/{name}/configuration");
        self.request(
            Method::PUT,
            &path,
            &[],
            serde_json::to_vec(&config).unwrap(),
        )
        .await
    }

    pub async fn invoke(&self, name: &str, payload: Value) -> Response {
        self.invoke_with(name, payload, &[]).await
    }

    pub async fn invoke_with(
        &self,
        name: &str,
        payload: Value,
        headers: &[(&str, &str)],
    ) -> Response {
        let path = format!("/2015-03-31/functions/{name}/invocations");
        self.request(
            Method::POST,
            &path,
            headers,
            serde_json::to_vec(&payload).unwrap(),
        )
        .await
    }

    /// Invokes with `X-Amz-Log-Type: Tail`.
    pub async fn invoke_tail(&self, name: &str, payload: Value) -> Response {
        self.invoke_with(name, payload, &[("x-amz-log-type", "Tail")])
            .await
    }

    /// (idle, busy) environments of a function.
    pub async fn environments(&self, name: &str) -> (u64, u64) {
        let v = self
            .get(&format!("/ember/v1/functions/{name}/environments"))
            .await
            .json();
        (v["Idle"].as_u64().unwrap(), v["Busy"].as_u64().unwrap())
    }

    /// Waits, at most `limit`, until the function's environment counts satisfy `done`.
    pub async fn wait_environments(
        &self,
        name: &str,
        limit: Duration,
        done: impl Fn((u64, u64)) -> bool,
    ) -> (u64, u64) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let counts = self.environments(name).await;
            if done(counts) || tokio::time::Instant::now() > deadline {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The name of the server on `data_dir`: `ember-` and a hash of the directory.
fn instance(data_dir: &Path) -> String {
    use sha2::Digest;
    let data = data_dir.canonicalize().unwrap();
    let hash = hex::encode(sha2::Sha256::digest(data.as_os_str().as_encoded_bytes()));
    format!("ember-{}", &hash[..12])
}

/// The server's instance directory in the memory hierarchy (see ember-sandbox-process's
/// `cgroup` module): `ember-` and a hash of its data directory, below its own cgroup.
fn cgroup_dir(pid: u32, data_dir: &Path) -> PathBuf {
    let instance = instance(data_dir);
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let memory = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
        ctrls
            .split(',')
            .any(|c| c == "memory")
            .then(|| path.trim_start_matches('/').to_owned())
    });
    match memory {
        Some(path) => Path::new("/sys/fs/cgroup/memory").join(path).join(instance),
        None => Path::new("/sys/fs/cgroup").join(instance),
    }
}

/// Sets `extra`'s fields over `base`'s.
pub fn merge(base: &mut Value, extra: Value) {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
}

/// Zips `(name, contents, unix mode)` entries.
pub fn zip_files(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, contents, mode) in files {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        zip.start_file(*name, options).unwrap();
        zip.write_all(contents).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// The `provided` test function: a Python script as the package's `bootstrap`.
pub fn provided_zip() -> Vec<u8> {
    zip_files(&[("bootstrap", BOOTSTRAP.as_bytes(), 0o755)])
}

/// Runs the `ember` CLI against `endpoint`; returns (exit code, stdout, stderr).
pub fn cli(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(EMBER)
        .args(args)
        .env("EMBER_ENDPOINT", endpoint)
        .output()
        .expect("run ember");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
