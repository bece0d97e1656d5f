use std::time::Duration;

use super::*;

const ECHO: &str = include_str!("../fixtures/echo.wat");
const SPIN: &str = include_str!("../fixtures/spin.wat");
const GROW: &str = include_str!("../fixtures/grow.wat");
const EXIT: &str = include_str!("../fixtures/exit.wat");
const DIVIDE: &str = include_str!("../fixtures/divide.wat");

const LIMITS: Limits = Limits {
    memory_bytes: 16 << 20,
    timeout: Duration::from_secs(5),
};

fn engine() -> (tempfile::TempDir, WasmEngine) {
    let dir = tempfile::tempdir().unwrap();
    let engine = WasmEngine::new(&dir.path().join("compiled")).unwrap();
    (dir, engine)
}

async fn run(engine: &WasmEngine, module: &Prepared, input: &[u8], limits: Limits) -> Outcome {
    run_with(engine, module, input, &[], limits).await
}

async fn run_with(
    engine: &WasmEngine,
    module: &Prepared,
    input: &[u8],
    env: &[(String, String)],
    limits: Limits,
) -> Outcome {
    let args = ["module.wasm".to_owned()];
    let run = Run {
        input: Bytes::copy_from_slice(input),
        args: &args,
        env,
        tmp: None,
        task: None,
        egress: false,
        limits,
    };
    engine.run_command(module, run).await.unwrap()
}

#[tokio::test]
async fn a_command_reads_its_event_on_stdin_and_answers_on_stdout_in_a_fresh_instance() {
    let (_dir, engine) = engine();
    let echo = engine.load(ECHO.as_bytes()).unwrap();
    let event = br#"{"hello": "wasm"}"#.repeat(200);
    for _ in 0..3 {
        let out = run(&engine, &echo, &event, LIMITS).await;
        assert_eq!(out.end, End::Exit(0));
        assert_eq!(out.stdout, &event[..]);
        // A global incremented on every run reads 1 each time: nothing leaks between runs.
        assert_eq!(out.stderr, &b"run 1\n"[..]);
        assert!(!out.memory_limit_hit);
    }
}

#[tokio::test]
async fn compiled_modules_are_cached_on_disk_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let first = WasmEngine::new(&cache).unwrap();
    let echo = first.load(ECHO.as_bytes()).unwrap();
    first.load(ECHO.as_bytes()).unwrap();
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(files.len(), 1, "one compiled file per module");
    let name = files[0].as_ref().unwrap().file_name();
    assert!(
        name.to_string_lossy().starts_with(echo.sha256()),
        "{name:?}"
    );
    drop(first);
    // Another engine (a restart) loads the compiled form and runs it.
    let second = WasmEngine::new(&cache).unwrap();
    let echo = second.load(ECHO.as_bytes()).unwrap();
    let out = run(&second, &echo, b"again", LIMITS).await;
    assert_eq!(out.stdout, &b"again"[..]);
    // A damaged cache file is compiled again, not trusted.
    let path = files[0].as_ref().unwrap().path();
    std::fs::write(&path, b"not a compiled module").unwrap();
    let echo = second.load(ECHO.as_bytes()).unwrap();
    let out = run(&second, &echo, b"fixed", LIMITS).await;
    assert_eq!(out.stdout, &b"fixed"[..]);
}

#[tokio::test]
async fn a_busy_loop_is_stopped_at_the_timeout() {
    let (_dir, engine) = engine();
    let spin = engine.load(SPIN.as_bytes()).unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(200),
        ..LIMITS
    };
    let out = run(&engine, &spin, b"", limits).await;
    assert_eq!(out.end, End::Timeout);
}

#[tokio::test]
async fn memory_beyond_the_limit_is_refused_and_the_module_only_hurts_itself() {
    let (_dir, engine) = engine();
    let grow = engine.load(GROW.as_bytes()).unwrap();
    let out = run(&engine, &grow, b"", LIMITS).await;
    assert!(out.memory_limit_hit);
    assert!(
        matches!(&out.end, End::Trap(m) if m.contains("unreachable")),
        "{:?}",
        out.end
    );
    assert!(out.peak_memory_bytes <= LIMITS.memory_bytes);
    assert!(out.peak_memory_bytes > LIMITS.memory_bytes / 2);
    // The engine is fine: the next run works.
    let echo = engine.load(ECHO.as_bytes()).unwrap();
    let out = run(&engine, &echo, b"ok", LIMITS).await;
    assert_eq!(out.stdout, &b"ok"[..]);
}

#[tokio::test]
async fn traps_and_exit_codes_are_reported() {
    let (_dir, engine) = engine();
    let divide = engine.load(DIVIDE.as_bytes()).unwrap();
    let out = run(&engine, &divide, b"", LIMITS).await;
    assert!(
        matches!(&out.end, End::Trap(m) if m.contains("divide by zero")),
        "{:?}",
        out.end
    );
    let exit = engine.load(EXIT.as_bytes()).unwrap();
    let out = run(&engine, &exit, b"", LIMITS).await;
    assert_eq!(out.end, End::Exit(3));
}

#[test]
fn bad_modules_are_refused_with_the_reason() {
    let (_dir, engine) = engine();
    let Err(WasmError::Invalid(why)) = engine.load(b"\0asm\x01\0\0\0\x01") else {
        panic!("a truncated module was accepted");
    };
    assert!(!why.is_empty());
    let needs_sockets =
        r#"(module (import "env" "connect" (func (param i32))) (func (export "_start")))"#;
    assert!(matches!(
        engine.load(needs_sockets.as_bytes()),
        Err(WasmError::Link(_))
    ));
}

#[test]
fn a_module_without_a_callable_start_is_refused_when_loaded() {
    let (_dir, engine) = engine();
    for module in [
        r#"(module (func (export "main")))"#,
        r#"(module (func (export "_start") (param i32)))"#,
        r#"(module (memory (export "_start") 1))"#,
    ] {
        let refused = engine.load(module.as_bytes());
        assert!(matches!(refused, Err(WasmError::NotCommand)), "{module}");
    }
}

#[test]
fn only_modules_that_can_reach_files_are_given_directories() {
    let (_dir, engine) = engine();
    assert!(!engine.load(ECHO.as_bytes()).unwrap().uses_files);
    let opens = r#"(module
        (import "wasi_snapshot_preview1" "path_open"
            (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start")))"#;
    assert!(engine.load(opens.as_bytes()).unwrap().uses_files);
}

const PREINIT: &str = include_str!("../fixtures/preinit.wat");

#[tokio::test]
async fn a_module_with_an_initialization_function_starts_from_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("compiled");
    let engine = WasmEngine::new(&cache).unwrap();
    let module = engine.load(PREINIT.as_bytes()).unwrap();
    let mut random = std::collections::HashSet::new();
    for _ in 0..8 {
        let out = run(&engine, &module, b"", LIMITS).await;
        let text = String::from_utf8(out.stdout.to_vec()).unwrap();
        // Initialized once, before any instance: every instance finds its state in place.
        assert!(text.starts_with("init=1 pre=1 rnd="), "{text}");
        random.insert(text);
    }
    // Entropy is the host's, per instance: not frozen into the snapshot.
    assert!(
        random.len() > 1,
        "every instance drew the same random byte: {random:?}"
    );
    // A restart loads the snapshot from the cache: still initialized, not again.
    drop(engine);
    let engine = WasmEngine::new(&cache).unwrap();
    let module = engine.load(PREINIT.as_bytes()).unwrap();
    let out = run(&engine, &module, b"", LIMITS).await;
    assert!(out.stdout.starts_with(b"init=1 pre=1"), "{:?}", out.stdout);
}

#[test]
fn a_failing_initialization_is_refused_with_the_reason() {
    let (_dir, engine) = engine();
    let traps = r#"(module
        (memory (export "memory") 1)
        (func (export "wizer.initialize") unreachable)
        (func (export "_start")))"#;
    let Err(WasmError::Init(why)) = engine.load(traps.as_bytes()) else {
        panic!("a module whose initialization traps was accepted");
    };
    assert!(why.contains("unreachable"), "{why}");
}

#[tokio::test]
async fn a_module_that_reads_its_environment_is_given_its_variables_and_arguments() {
    let (_dir, engine) = engine();
    // Answers how many variables and arguments it was given, as two digits.
    let counts = r#"(module
        (import "wasi_snapshot_preview1" "environ_sizes_get"
          (func $environ (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "args_sizes_get"
          (func $args (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write"
          (func $fd_write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start")
          (drop (call $environ (i32.const 0) (i32.const 4)))
          (drop (call $args (i32.const 8) (i32.const 12)))
          (i32.store8 (i32.const 100) (i32.add (i32.const 48) (i32.load (i32.const 0))))
          (i32.store8 (i32.const 101) (i32.add (i32.const 48) (i32.load (i32.const 8))))
          (i32.store (i32.const 16) (i32.const 100))
          (i32.store (i32.const 20) (i32.const 2))
          (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))"#;
    let module = engine.load(counts.as_bytes()).unwrap();
    let env = [("A", "1"), ("B", "2"), ("C", "3")].map(|(k, v)| (k.to_owned(), v.to_owned()));
    let out = run_with(&engine, &module, b"", &env, LIMITS).await;
    assert_eq!(out.end, End::Exit(0));
    assert_eq!(out.stdout, &b"31"[..], "3 variables, 1 argument");
    // A module that cannot read them (echo imports neither) runs the same with them set.
    let echo = engine.load(ECHO.as_bytes()).unwrap();
    let out = run_with(&engine, &echo, b"same", &env, LIMITS).await;
    assert_eq!(out.stdout, &b"same"[..]);
}
