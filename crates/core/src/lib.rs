//! Ember's domain types, free of I/O.
//!
//! - [`function`]: what a user deploys ([`FunctionSpec`]) and the rules it must satisfy.
//! - [`isolation`]: the sandbox backends a function may choose.
//! - [`runtime`]: the runtime identifiers Ember accepts and what each maps to.
//! - [`scaling`]: a function's own keep-alive choice.
//! - [`limits`]: every platform limit in one place, with the reason for its value.
//! - [`report`]: the `START` / `END` / `REPORT` log lines of one invocation.
//! - [`usage`]: billed usage per function version and day, and the price table.
//!
//! Everything here is plain data plus validation; the store, the sandbox and the API build
//! on these types and never re-implement their rules.

pub mod arn;
pub mod duration;
pub mod function;
pub mod isolation;
pub mod limits;
pub mod report;
pub mod runtime;
pub mod scaling;
pub mod time;
pub mod usage;

pub use function::{FunctionSpec, FunctionUpdate, ValidationError};
pub use isolation::{Isolation, Network};
pub use runtime::{Runtime, RuntimeFamily};
pub use scaling::KeepAliveSetting;

/// An error and its sources, one sentence each, for messages shown to users.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
