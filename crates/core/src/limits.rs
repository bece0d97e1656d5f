//! Platform limits. They follow AWS Lambda's published quotas so that code and tooling
//! written for Lambda behave the same here.

/// Smallest and largest function memory, in MB.
pub const MEMORY_MB: (u32, u32) = (128, 10240);
/// Memory given to a function that does not set one, in MB.
pub const DEFAULT_MEMORY_MB: u32 = 128;
/// Shortest and longest invocation timeout, in seconds.
pub const TIMEOUT_S: (u32, u32) = (1, 900);
/// Timeout given to a function that does not set one, in seconds.
pub const DEFAULT_TIMEOUT_S: u32 = 3;
/// Smallest and largest `/tmp`, in MB.
pub const EPHEMERAL_MB: (u32, u32) = (512, 10240);
/// `/tmp` size for a function that does not set one, in MB.
pub const DEFAULT_EPHEMERAL_MB: u32 = 512;
/// Total size of a function's environment variables (keys plus values), in bytes.
pub const ENVIRONMENT_BYTES: usize = 4 * 1024;
/// Largest zip accepted in a create or update request, in bytes.
pub const ZIP_BYTES: u64 = 50 * 1024 * 1024;
/// Largest unpacked size of a function's code, in bytes.
pub const UNZIPPED_BYTES: u64 = 250 * 1024 * 1024;
/// Most files one package may hold. Far above real packages; bounds the work a hostile
/// archive can cause.
pub const ZIP_ENTRIES: usize = 50_000;
/// Largest compression ratio of one entry before it is treated as a zip bomb. Text compresses
/// at most ~10:1 in practice; deflate's own ceiling is ~1032:1.
pub const ZIP_RATIO: u64 = 500;
/// Largest payload of a synchronous invocation and of its response, in bytes.
pub const SYNC_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;
/// How long a runtime may take from process start to its first `/next`.
pub const INIT_TIMEOUT_MS: u64 = 10_000;
/// Invocations one environment may serve at once (`AWS_LAMBDA_MAX_CONCURRENCY`): beyond
/// a few dozen, one process's memory and CPU are the limit, not the platform.
pub const MAX_CONCURRENCY: (u32, u32) = (1, 64);
/// Memory that buys one full vCPU, in MB; CPU quota is proportional to memory.
pub const MB_PER_VCPU: u32 = 1769;
/// Size of the log tail returned with `X-Amz-Log-Type: Tail`, in bytes.
pub const LOG_TAIL_BYTES: usize = 4 * 1024;
/// Longest handler string.
pub const HANDLER_CHARS: usize = 128;
/// Longest function name.
pub const NAME_CHARS: usize = 64;
/// Longest description.
pub const DESCRIPTION_CHARS: usize = 256;
/// Most layers one function may use.
pub const LAYERS: usize = 5;
