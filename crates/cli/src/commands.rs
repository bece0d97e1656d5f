//! The client commands: `deploy`, `invoke`, `ls`, `get`, `rm`, `logs`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::BodyExt;
use hyper::Method;

use crate::Endpoint;
use crate::client::Client;

#[derive(clap::Args)]
pub struct DeployArgs {
    /// A function directory or a zip file.
    path: PathBuf,
    /// Function name; defaults to the directory or zip name.
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    settings: FunctionSettings,
    #[command(flatten)]
    endpoint: Endpoint,
}

/// Settings `deploy` may set; unset ones keep their current (or default) value.
#[derive(clap::Args, Default, Clone)]
pub struct FunctionSettings {
    /// Runtime: python3, python3.11, nodejs, provided, provided.al2023, wasm, … Inferred
    /// when absent: a package with a `bootstrap` is `provided`, one whose only file at the
    /// root ending in .wasm is that is `wasm` (with that module as handler), anything else
    /// `python3`.
    #[arg(long)]
    pub runtime: Option<String>,
    /// Handler, e.g. app.handler, or for wasm the module's path, e.g. app.wasm. Defaults
    /// to app.handler for Python.
    #[arg(long)]
    pub handler: Option<String>,
    /// Memory in MB (128–10240).
    #[arg(long)]
    pub memory: Option<u32>,
    /// Timeout in seconds (1–900).
    #[arg(long)]
    pub timeout: Option<u32>,
    /// Size of /tmp in MB (512–10240).
    #[arg(long)]
    pub ephemeral_storage: Option<u32>,
    /// Environment variable, KEY=VALUE; repeatable. Replaces all variables when given.
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Freeze idle environments (true/false): nothing of the function runs between calls,
    /// at the cost of a thaw (~0.2 ms) on each warm call.
    #[arg(long)]
    pub freeze_idle: Option<bool>,
    /// Sandbox the function runs in: process (the default, fastest start), runc, or gvisor
    /// (a user-space kernel between the function and the host).
    #[arg(long)]
    pub isolation: Option<String>,
    /// Network: none (loopback only, the default) or egress (outbound through NAT, never to
    /// Ember's API or another function).
    #[arg(long)]
    pub network: Option<String>,
    /// Keep-alive of idle environments: adaptive, fixed:DURATION (e.g. fixed:5m), or server
    /// (follow the server's policy).
    #[arg(long)]
    pub keep_alive: Option<String>,
    /// Invocations one environment serves at once (1–64; AWS_LAMBDA_MAX_CONCURRENCY), for
    /// handlers that can run concurrently (Ember's Python and Node runtimes can).
    #[arg(long)]
    pub max_concurrency: Option<u32>,
    /// For a wasm wasi:http handler (true/false): keep one instance between an
    /// environment's calls instead of a fresh instance each.
    #[arg(long)]
    pub reuse_instance: Option<bool>,
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

impl FunctionSettings {
    fn is_empty(&self) -> bool {
        self.runtime.is_none()
            && self.handler.is_none()
            && self.memory.is_none()
            && self.timeout.is_none()
            && self.ephemeral_storage.is_none()
            && self.env.is_empty()
            && self.freeze_idle.is_none()
            && self.isolation.is_none()
            && self.network.is_none()
            && self.keep_alive.is_none()
            && self.max_concurrency.is_none()
            && self.reuse_instance.is_none()
    }

    /// The Lambda configuration fields these settings set.
    fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut body = serde_json::Map::new();
        if let Some(r) = &self.runtime {
            body.insert("Runtime".into(), r.clone().into());
        }
        if let Some(h) = &self.handler {
            body.insert("Handler".into(), h.clone().into());
        }
        if let Some(m) = self.memory {
            body.insert("MemorySize".into(), m.into());
        }
        if let Some(t) = self.timeout {
            body.insert("Timeout".into(), t.into());
        }
        if let Some(e) = self.ephemeral_storage {
            body.insert("EphemeralStorage".into(), serde_json::json!({ "Size": e }));
        }
        if !self.env.is_empty() {
            let vars: serde_json::Map<_, _> = self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            body.insert(
                "Environment".into(),
                serde_json::json!({ "Variables": vars }),
            );
        }
        body
    }
}

/// Creates `name` from `zip`, or updates its code (and the given settings) if it exists.
pub async fn create_or_update(
    client: &Client,
    name: &str,
    zip: &[u8],
    settings: &FunctionSettings,
) -> anyhow::Result<serde_json::Value> {
    let path = format!("/2015-03-31/functions/{name}");
    let exists = client
        .request(Method::GET, &format!("{path}/configuration"), &[], vec![])
        .await?
        .status
        == 200;
    let zip = BASE64.encode(zip);
    let answer = if exists {
        let code = serde_json::json!({ "ZipFile": zip });
        let mut answer = client
            .call(
                Method::PUT,
                &format!("{path}/code"),
                &[],
                serde_json::to_vec(&code)?,
            )
            .await?;
        if !settings.is_empty() {
            let body = serde_json::Value::Object(settings.fields());
            answer = client
                .call(
                    Method::PUT,
                    &format!("{path}/configuration"),
                    &[],
                    serde_json::to_vec(&body)?,
                )
                .await?;
        }
        answer
    } else {
        let mut body = settings.fields();
        body.insert("FunctionName".into(), name.into());
        body.insert("Code".into(), serde_json::json!({ "ZipFile": zip }));
        body.entry("Runtime").or_insert_with(|| "python3".into());
        let python = body["Runtime"]
            .as_str()
            .is_some_and(|r| r.starts_with("python"));
        if python {
            body.entry("Handler")
                .or_insert_with(|| "app.handler".into());
        }
        client
            .call(
                Method::POST,
                "/2015-03-31/functions",
                &[],
                serde_json::to_vec(&body)?,
            )
            .await?
    };
    let mut ember = serde_json::Map::new();
    if let Some(freeze) = settings.freeze_idle {
        ember.insert("FreezeIdle".into(), freeze.into());
    }
    if let Some(isolation) = &settings.isolation {
        ember.insert("Isolation".into(), isolation.clone().into());
    }
    if let Some(network) = &settings.network {
        ember.insert("Network".into(), network.clone().into());
    }
    if let Some(keep_alive) = &settings.keep_alive {
        ember.insert("KeepAlive".into(), keep_alive.clone().into());
    }
    if let Some(n) = settings.max_concurrency {
        ember.insert("MaxConcurrency".into(), n.into());
    }
    if let Some(reuse) = settings.reuse_instance {
        ember.insert("ReuseInstance".into(), reuse.into());
    }
    if !ember.is_empty() {
        let body = serde_json::Value::Object(ember);
        let path = format!("/ember/v1/functions/{name}/settings");
        client
            .call(Method::PUT, &path, &[], serde_json::to_vec(&body)?)
            .await?;
    }
    Ok(serde_json::from_slice(&answer.body)?)
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoint.endpoint);
    let meta = std::fs::metadata(&args.path)
        .with_context(|| format!("cannot read {}", args.path.display()))?;
    let zip = if meta.is_dir() {
        crate::package::zip_dir(&args.path)?
    } else {
        std::fs::read(&args.path)?
    };
    let name = match args.name {
        Some(n) => n,
        None => args
            .path
            .canonicalize()?
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("cannot infer a function name from the path; pass --name")?,
    };
    let mut settings = args.settings;
    if settings.runtime.is_none() && has_bootstrap(&zip) {
        settings.runtime = Some("provided".into());
    }
    if settings.runtime.is_none()
        && let Some(module) = lone_wasm_module(&zip)
    {
        settings.runtime = Some("wasm".into());
        settings.handler.get_or_insert(module);
    }
    let config = create_or_update(&client, &name, &zip, &settings).await?;
    println!(
        "deployed {name} ({} {}, {} MB, {} s, code {} bytes)",
        config["Runtime"].as_str().unwrap_or("?"),
        config["Handler"].as_str().unwrap_or(""),
        config["MemorySize"],
        config["Timeout"],
        config["CodeSize"]
    );
    Ok(())
}

/// The package's one `.wasm` file at its root, if it has exactly one.
fn lone_wasm_module(zip: &[u8]) -> Option<String> {
    let zip = zip::ZipArchive::new(std::io::Cursor::new(zip)).ok()?;
    let mut modules = zip
        .file_names()
        .filter(|n| n.ends_with(".wasm") && !n.contains('/'));
    let module = modules.next()?.to_owned();
    modules.next().is_none().then_some(module)
}

fn has_bootstrap(zip: &[u8]) -> bool {
    zip::ZipArchive::new(std::io::Cursor::new(zip))
        .is_ok_and(|z| z.file_names().any(|n| n == "bootstrap"))
}

#[derive(clap::Args)]
pub struct InvokeArgs {
    name: String,
    /// The event, as JSON.
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Print the invocation's log (the last 4 KB) to stderr.
    #[arg(long)]
    log: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

pub async fn invoke(args: InvokeArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoint.endpoint);
    let answer = client
        .invoke(&args.name, args.payload.as_bytes(), args.log)
        .await?;
    if let Some(log) = answer.header("x-amz-log-result") {
        let log = BASE64.decode(log).unwrap_or_default();
        eprint!("{}", String::from_utf8_lossy(&log));
    }
    println!("{}", String::from_utf8_lossy(&answer.body));
    if let Some(kind) = answer.header("x-amz-function-error") {
        let doc: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
        bail!(
            "the function failed ({kind}): {}: {}",
            doc["errorType"].as_str().unwrap_or("Error"),
            doc["errorMessage"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    endpoint: Endpoint,
}

pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoint.endpoint);
    let mut marker: Option<String> = None;
    let mut rows = Vec::new();
    loop {
        let path = match &marker {
            Some(m) => format!("/2015-03-31/functions?Marker={m}"),
            None => "/2015-03-31/functions".into(),
        };
        let page: serde_json::Value =
            serde_json::from_slice(&client.call(Method::GET, &path, &[], vec![]).await?.body)?;
        for f in page["Functions"].as_array().into_iter().flatten() {
            rows.push([
                f["FunctionName"].as_str().unwrap_or("").to_owned(),
                f["Runtime"].as_str().unwrap_or("").to_owned(),
                f["Handler"].as_str().unwrap_or("").to_owned(),
                f["MemorySize"].to_string(),
                f["Timeout"].to_string(),
                f["LastModified"].as_str().unwrap_or("").to_owned(),
            ]);
        }
        match page["NextMarker"].as_str() {
            Some(m) => marker = Some(m.to_owned()),
            None => break,
        }
    }
    let header = [
        "NAME",
        "RUNTIME",
        "HANDLER",
        "MEMORY",
        "TIMEOUT",
        "LAST MODIFIED",
    ];
    print_table(&header, rows)?;
    Ok(())
}

/// Prints rows under a header, in columns as wide as their widest cell.
pub fn print_table<const N: usize>(
    header: &[&str; N],
    rows: Vec<[String; N]>,
) -> std::io::Result<()> {
    let widths: Vec<usize> = (0..N)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct NameArgs {
    name: String,
    #[command(flatten)]
    endpoint: Endpoint,
}

pub async fn get(args: NameArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoint.endpoint);
    let answer = client
        .call(
            Method::GET,
            &format!("/2015-03-31/functions/{}/configuration", args.name),
            &[],
            vec![],
        )
        .await?;
    let value: serde_json::Value = serde_json::from_slice(&answer.body)?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

pub async fn rm(args: NameArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoint.endpoint);
    client
        .call(
            Method::DELETE,
            &format!("/2015-03-31/functions/{}", args.name),
            &[],
            vec![],
        )
        .await?;
    println!("deleted {}", args.name);
    Ok(())
}

#[derive(clap::Args)]
pub struct LogsArgs {
    name: String,
    /// Keep printing new output as it is written.
    #[arg(long, short)]
    follow: bool,
    /// How much of the existing log to print, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    bytes: u64,
    #[command(flatten)]
    endpoint: Endpoint,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoint.endpoint);
    let path = format!(
        "/ember/v1/functions/{}/logs?bytes={}&follow={}",
        args.name, args.bytes, args.follow
    );
    if !args.follow {
        let answer = client.call(Method::GET, &path, &[], vec![]).await?;
        std::io::stdout().write_all(&answer.body)?;
        return Ok(());
    }
    let response = client.send(Method::GET, &path, &[], vec![]).await?;
    if !response.status().is_success() {
        // Read it again through `call` for the error text.
        client
            .call(
                Method::GET,
                &path.replace("follow=true", "follow=false"),
                &[],
                vec![],
            )
            .await?;
        bail!(
            "the server refused to stream the log ({})",
            response.status()
        );
    }
    let mut body = response.into_body();
    let mut out = std::io::stdout();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            out.write_all(data)?;
            out.flush()?;
        }
    }
    Ok(())
}

#[derive(clap::Subcommand)]
pub enum KeysCommand {
    /// Create an access key and print its id and secret (shown only this once).
    Create,
    /// List access keys (ids and creation dates).
    Ls,
    /// Delete an access key.
    Rm { key_id: String },
}

#[derive(clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
    #[command(flatten)]
    endpoint: Endpoint,
}

pub async fn keys(args: KeysArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.endpoint.endpoint);
    match args.command {
        KeysCommand::Create => {
            let answer = client
                .call(Method::POST, "/ember/v1/keys", &[], vec![])
                .await?;
            let key: serde_json::Value = serde_json::from_slice(&answer.body)?;
            println!(
                "AWS_ACCESS_KEY_ID={}",
                key["AccessKeyId"].as_str().unwrap_or_default()
            );
            println!(
                "AWS_SECRET_ACCESS_KEY={}",
                key["SecretAccessKey"].as_str().unwrap_or_default()
            );
            eprintln!(
                "Keep the secret: it is not shown again. From now on every request must be signed."
            );
        }
        KeysCommand::Ls => {
            let answer = client
                .call(Method::GET, "/ember/v1/keys", &[], vec![])
                .await?;
            let keys: serde_json::Value = serde_json::from_slice(&answer.body)?;
            for key in keys["AccessKeys"].as_array().into_iter().flatten() {
                println!(
                    "{}  {}",
                    key["AccessKeyId"].as_str().unwrap_or_default(),
                    key["CreateDate"].as_str().unwrap_or_default()
                );
            }
        }
        KeysCommand::Rm { key_id } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/ember/v1/keys/{key_id}"),
                    &[],
                    vec![],
                )
                .await?;
            println!("deleted {key_id}");
        }
    }
    Ok(())
}
