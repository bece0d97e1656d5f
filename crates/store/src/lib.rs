//! Ember's persistent state on one node.
//!
//! - [`Store`] (`db`): function metadata in SQLite, WAL mode.
//! - [`Artifacts`]: content-addressed packages, zipped and unpacked.
//! - [`archive`]: the hostile-archive checks every package passes before it is stored.
//! - [`events`]: the durable queue of asynchronous invocations.
//! - [`queues`]: durable message queues.
//! - [`rules`]: schedules and event patterns, and their targets.
//! - [`secrets`]: access-key secrets sealed at rest.
//! - [`urls`]: function URLs.

pub mod archive;
pub mod artifacts;
pub mod db;
pub mod events;
pub mod queues;
pub mod rules;
pub mod secrets;
pub mod urls;

pub use archive::ArchiveError;
pub use artifacts::{Artifact, Artifacts};
pub use db::{
    AliasRecord, FunctionRecord, LayerRecord, ProvisionedRecord, Store, StoreError, StoredKey,
};
pub use events::{AsyncEvent, EventCounts, EventInvokeConfig, EventWrite, Failure, Outbox};
pub use queues::{Queue, QueueCounts, Received, SourceMapping};
pub use rules::{Rule, Target};
pub use secrets::{SecretBox, SecretError};
pub use urls::{RouteRecord, UrlConfig};
