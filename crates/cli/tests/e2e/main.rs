//! End-to-end tests: the real `ember` binary, real sandboxes, real sockets, a real store.
//!
//! Each test starts its own server on an ephemeral port with a temporary data directory and
//! talks to it over HTTP or through the CLI, as a user would. Tests that need the process
//! sandbox (root, cgroups) say why they skip when the host cannot run it.

mod aws;
mod bench;
mod cli;
mod conformance;
mod events;
mod failures;
mod isolation;
mod lifecycle;
mod node;
mod runtime_clients;
mod scaling;
mod support;
mod urls;
mod validation;
mod wasm;
