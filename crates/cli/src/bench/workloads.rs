//! The benchmark's functions: the same four workloads on every runtime.
//!
//! - **hello**: the event `{"hello":"world"}` answered with itself;
//! - **cpu**: `{"spin_ms":10}` keeps a core busy for 10 ms, then answers;
//! - **echo**: a 1 MB event answered with itself;
//! - **heavy init**: a second function whose init keeps a core busy for 300 ms (as heavy
//!   imports would) before it answers like hello: what warm reuse and provisioned
//!   concurrency save. On `wasm` that init runs once at deploy (a pre-initialized snapshot).
//!
//! and, for the scale-out figure, `{"sleep_ms":N}` holds its environment N ms.
//!
//! Every handler spins on a monotonic clock rather than looping a fixed count, so "10 ms
//! of CPU" is 10 ms on every runtime.

use std::path::PathBuf;

use anyhow::Context;

use crate::commands::FunctionSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Provided,
    Python,
    Node,
    Wasm,
}

pub const RUNTIMES: [Runtime; 4] = [
    Runtime::Provided,
    Runtime::Python,
    Runtime::Node,
    Runtime::Wasm,
];

/// The heavy init, in milliseconds.
pub const INIT_SPIN_MS: u64 = 300;
/// The CPU-bound handler's work, in milliseconds.
pub const CPU_SPIN_MS: u64 = 10;
/// The echo workload's payload size.
pub const ECHO_BYTES: usize = 1 << 20;

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Provided => "provided",
            Runtime::Python => "python3",
            Runtime::Node => "nodejs",
            Runtime::Wasm => "wasm",
        }
    }

    /// The function serving hello, echo and sleep (and, but on wasm, cpu).
    pub fn function(self) -> String {
        format!("bench-{}", self.name())
    }

    /// The function the cpu workload calls.
    pub fn cpu_function(self) -> String {
        match self {
            Runtime::Wasm => format!("bench-{}-cpu", self.name()),
            _ => self.function(),
        }
    }

    /// The function that holds its environment for the scale-out figure.
    pub fn sleep_function(self) -> String {
        match self {
            Runtime::Wasm => format!("bench-{}-sleep", self.name()),
            _ => self.function(),
        }
    }

    /// The heavy-init function.
    pub fn init_function(self) -> String {
        format!("bench-{}-init", self.name())
    }

    /// The event that makes [`Runtime::sleep_function`] hold its environment `ms`.
    pub fn sleep_event(self, ms: u64) -> String {
        match self {
            Runtime::Wasm => "{}".into(),
            _ => format!("{{\"sleep_ms\":{ms}}}"),
        }
    }

    /// The command whose run is the runtime's bare start on the host (the baseline of its
    /// cold starts): its label, program and arguments. Wasm has no process to start.
    pub fn bare_start(self) -> Option<(&'static str, PathBuf, &'static [&'static str])> {
        match self {
            Runtime::Python => Some((
                "python3 -c pass",
                "/usr/bin/python3".into(),
                &["-c", "pass"],
            )),
            Runtime::Node => Some(("node -e 0", "/usr/bin/node".into(), &["-e", "0"])),
            Runtime::Provided => Some((
                "exec of the Rust binary",
                std::env::current_exe().ok()?,
                &["--version"],
            )),
            Runtime::Wasm => None,
        }
    }

    /// The backends its cold starts are measured on.
    pub fn backends(self) -> &'static [&'static str] {
        match self {
            Runtime::Wasm => &["wasm"],
            _ => &["process", "runc", "gvisor"],
        }
    }

    /// Why this host cannot run the runtime, if it cannot.
    pub fn unavailable(self) -> Option<String> {
        let interpreter = match self {
            Runtime::Python => "/usr/bin/python3",
            Runtime::Node => "/usr/bin/node",
            Runtime::Provided | Runtime::Wasm => return None,
        };
        (!std::path::Path::new(interpreter).exists())
            .then(|| format!("{interpreter} is not installed"))
    }
}

/// One function to deploy: its name, package and settings.
pub struct Package {
    pub name: String,
    pub zip: Vec<u8>,
    pub settings: FunctionSettings,
}

const PYTHON: &str = r#"import os
import time


def spin(ms):
    until = time.perf_counter() + ms / 1000
    while time.perf_counter() < until:
        pass


spin(int(os.environ.get("INIT_SPIN_MS", "0")))


def handler(event, context):
    if isinstance(event, dict):
        if "spin_ms" in event:
            spin(event["spin_ms"])
        elif "sleep_ms" in event:
            time.sleep(event["sleep_ms"] / 1000)
    return event
"#;

const NODE: &str = r#"function spin(ms) {
  const until = performance.now() + ms;
  while (performance.now() < until) {}
}

spin(Number(process.env.INIT_SPIN_MS || 0));

export const handler = async (event) => {
  if (event && typeof event === 'object') {
    if ('spin_ms' in event) spin(event.spin_ms);
    else if ('sleep_ms' in event) await new Promise((r) => setTimeout(r, event.sleep_ms));
  }
  return event;
};
"#;

/// A WASI command that answers its event with itself: reads stdin to its end, writes it
/// all to stdout. `{IMPORTS}`, `{INIT}` and `{WORK}` are filled by [`wasm_module`].
const WASM_ECHO: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_read"
    (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get"
    (func $clock (param i32 i64 i32) (result i32)))
  {IMPORTS}
  ;; 6.5 MB: room for the largest synchronous event.
  (memory (export "memory") 100)
  (global $inited (mut i32) (i32.const 0))
  (func $now (result i64)
    (drop (call $clock (i32.const 1) (i64.const 1) (i32.const 0)))
    (i64.load (i32.const 0)))
  (func $spin (param $ns i64)
    (local $until i64)
    (local.set $until (i64.add (call $now) (local.get $ns)))
    (loop $busy
      (br_if $busy (i64.lt_u (call $now) (local.get $until)))))
  {INIT}
  (func (export "_start")
    (local $len i32) (local $n i32)
    ;; iovec at 16: read into 1024 + len, up to the end of memory
    (loop $more
      (i32.store (i32.const 16) (i32.add (i32.const 1024) (local.get $len)))
      (i32.store (i32.const 20) (i32.sub (i32.const 6552576) (local.get $len)))
      (drop (call $fd_read (i32.const 0) (i32.const 16) (i32.const 1) (i32.const 8)))
      (local.set $n (i32.load (i32.const 8)))
      (local.set $len (i32.add (local.get $len) (local.get $n)))
      (br_if $more (i32.ne (local.get $n) (i32.const 0))))
    {WORK}
    (i32.store (i32.const 16) (i32.const 1024))
    (i32.store (i32.const 20) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 8)))))
"#;

/// The echo module with extra `imports`, extra module fields `init`, and `work` done
/// before the answer.
fn wasm_module(imports: &str, init: &str, work: &str) -> String {
    WASM_ECHO
        .replace("{IMPORTS}", imports)
        .replace("{INIT}", init)
        .replace("{WORK}", work)
}

/// `wizer.initialize` keeps a core busy for the heavy init, once, at deploy.
fn wasm_heavy_init() -> String {
    let ns = INIT_SPIN_MS * 1_000_000;
    wasm_module(
        "",
        &format!(
            "(func (export \"wizer.initialize\") (call $spin (i64.const {ns})) (global.set $inited (i32.const 1)))"
        ),
        "",
    )
}

/// Sleeps `ms` before answering: `poll_oneoff` on one relative monotonic-clock
/// subscription (userdata, tag 0 = clock, clock id 1, timeout, precision, flags).
fn wasm_sleep(ms: u64) -> String {
    let ns = ms * 1_000_000;
    wasm_module(
        r#"(import "wasi_snapshot_preview1" "poll_oneoff"
    (func $poll (param i32 i32 i32 i32) (result i32)))"#,
        "",
        &format!(
            "(i64.store (i32.const 64) (i64.const 0))
    (i32.store8 (i32.const 72) (i32.const 0))
    (i32.store (i32.const 80) (i32.const 1))
    (i64.store (i32.const 88) (i64.const {ns}))
    (i64.store (i32.const 96) (i64.const 0))
    (i32.store16 (i32.const 104) (i32.const 0))
    (drop (call $poll (i32.const 64) (i32.const 128) (i32.const 1) (i32.const 8)))"
        ),
    )
}

/// The packages of `runtime`'s functions.
pub fn packages(runtime: Runtime) -> anyhow::Result<Vec<Package>> {
    let settings = |runtime: &str, handler: &str, init: bool| FunctionSettings {
        runtime: Some(runtime.into()),
        handler: Some(handler.into()),
        memory: Some(1769),
        timeout: Some(30),
        env: if init {
            vec![("INIT_SPIN_MS".to_owned(), INIT_SPIN_MS.to_string())]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    let zip = |files: &[(&str, &[u8], bool)]| crate::package::zip_files(files);
    let pair = |zip: Vec<u8>, runtime_name: &str, handler: &str| -> Vec<Package> {
        vec![
            Package {
                name: runtime.function(),
                zip: zip.clone(),
                settings: settings(runtime_name, handler, false),
            },
            Package {
                name: runtime.init_function(),
                zip,
                settings: settings(runtime_name, handler, true),
            },
        ]
    };
    Ok(match runtime {
        Runtime::Provided => {
            let exe =
                std::fs::read(std::env::current_exe()?).context("reading the ember binary")?;
            let bootstrap = b"#!/bin/sh\nexec /var/task/ember echo-runtime\n";
            let zip = zip(&[("bootstrap", bootstrap, true), ("ember", &exe, true)])?;
            pair(zip, "provided", "bootstrap")
        }
        Runtime::Python => pair(
            zip(&[("app.py", PYTHON.as_bytes(), false)])?,
            "python3",
            "app.handler",
        ),
        Runtime::Node => pair(
            zip(&[("index.mjs", NODE.as_bytes(), false)])?,
            "nodejs",
            "index.handler",
        ),
        Runtime::Wasm => {
            let module = |name: &str, wat: String, init: bool| -> anyhow::Result<Package> {
                Ok(Package {
                    name: name.to_owned(),
                    zip: zip(&[("app.wat", wat.as_bytes(), false)])?,
                    settings: FunctionSettings {
                        env: Vec::new(),
                        ..settings("wasm", "app.wat", init)
                    },
                })
            };
            let spin = format!("(call $spin (i64.const {}))", CPU_SPIN_MS * 1_000_000);
            vec![
                module(&runtime.function(), wasm_module("", "", ""), false)?,
                module(&runtime.init_function(), wasm_heavy_init(), true)?,
                module(&runtime.cpu_function(), wasm_module("", "", &spin), false)?,
                module(&runtime.sleep_function(), wasm_sleep(1000), false)?,
            ]
        }
    })
}

/// The hello event.
pub const HELLO: &[u8] = br#"{"hello":"world"}"#;

/// The cpu workload's event.
pub fn cpu_event() -> String {
    format!("{{\"spin_ms\":{CPU_SPIN_MS}}}")
}

/// A JSON event of [`ECHO_BYTES`].
pub fn echo_event() -> Vec<u8> {
    let filler = ECHO_BYTES - r#"{"data":""}"#.len();
    let mut event = br#"{"data":""#.to_vec();
    event.extend(std::iter::repeat_n(b'x', filler));
    event.extend_from_slice(br#""}"#);
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wasm_module_parses() {
        for package in packages(Runtime::Wasm).unwrap() {
            let archive = zip::ZipArchive::new(std::io::Cursor::new(package.zip)).unwrap();
            assert_eq!(archive.len(), 1);
        }
        for wat in [
            wasm_module("", "", ""),
            wasm_heavy_init(),
            wasm_sleep(5),
            wasm_module("", "", "(call $spin (i64.const 1))"),
        ] {
            wat::parse_str(&wat).unwrap_or_else(|e| panic!("{e}\n{wat}"));
        }
    }

    #[test]
    fn the_echo_event_is_one_megabyte_of_json() {
        let event = echo_event();
        assert_eq!(event.len(), ECHO_BYTES);
        let parsed: serde_json::Value = serde_json::from_slice(&event).unwrap();
        assert!(parsed["data"].as_str().unwrap().len() > 1_000_000);
    }
}
