//! Function metadata in SQLite (WAL mode).
//!
//! One row per function: its validated spec as JSON plus the fields the API reports.
//! The store is the control plane's; the invoke path reads functions from memory.

use std::path::Path;
use std::sync::Mutex;

use ember_core::FunctionSpec;
use ember_core::usage::{DayUsage, Usage};
use rusqlite::{Connection, OptionalExtension, params};

/// A stored function: `$LATEST` (`version: None`) or a published version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRecord {
    pub version: Option<u32>,
    pub spec: FunctionSpec,
    pub code_sha256: String,
    pub code_size: u64,
    pub revision_id: String,
    pub last_modified: String,
}

/// An alias: a name for a version, optionally sending a share of calls to a second one.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasRecord {
    pub function: String,
    pub name: String,
    /// `$LATEST` or a version number.
    pub version: String,
    pub description: String,
    /// The additional version and the share of invocations (0–1) it receives.
    pub routing: Option<(String, f64)>,
    pub revision_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("function already exists: {0}")]
    Exists(String),
    #[error("function not found: {0}")]
    NotFound(String),
    #[error("alias already exists: {0}")]
    AliasExists(String),
    #[error("alias not found: {0}")]
    AliasNotFound(String),
    #[error("the metadata store failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a stored function could not be read")]
    Corrupt(#[from] serde_json::Error),
}

/// The metadata store.
pub struct Store {
    conn: Mutex<Connection>,
}

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS functions (
        name          TEXT PRIMARY KEY,
        spec          TEXT NOT NULL,
        code_sha256   TEXT NOT NULL,
        code_size     INTEGER NOT NULL,
        revision_id   TEXT NOT NULL,
        last_modified TEXT NOT NULL
    );",
    "ALTER TABLE functions ADD COLUMN last_version INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE functions ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
     CREATE TABLE versions (
        function      TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        version       INTEGER NOT NULL,
        spec          TEXT NOT NULL,
        code_sha256   TEXT NOT NULL,
        code_size     INTEGER NOT NULL,
        revision_id   TEXT NOT NULL,
        last_modified TEXT NOT NULL,
        PRIMARY KEY (function, version)
     );
     CREATE TABLE aliases (
        function      TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        name          TEXT NOT NULL,
        version       TEXT NOT NULL,
        description   TEXT NOT NULL,
        extra_version TEXT,
        extra_weight  REAL,
        revision_id   TEXT NOT NULL,
        PRIMARY KEY (function, name)
     );",
    "CREATE TABLE access_keys (
        key_id  TEXT PRIMARY KEY,
        nonce   BLOB NOT NULL,
        secret  BLOB NOT NULL,
        created TEXT NOT NULL
     );",
    "CREATE TABLE layer_versions (
        name          TEXT NOT NULL,
        version       INTEGER NOT NULL,
        description   TEXT NOT NULL,
        runtimes      TEXT NOT NULL,
        license       TEXT NOT NULL,
        code_sha256   TEXT NOT NULL,
        code_size     INTEGER NOT NULL,
        unpacked_size INTEGER NOT NULL,
        created       TEXT NOT NULL,
        deleted       INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (name, version)
     );",
    "CREATE TABLE reserved_concurrency (
        function TEXT PRIMARY KEY REFERENCES functions(name) ON DELETE CASCADE,
        reserved INTEGER NOT NULL
     );",
    "CREATE TABLE provisioned_concurrency (
        function      TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier     TEXT NOT NULL,
        requested     INTEGER NOT NULL,
        last_modified TEXT NOT NULL,
        PRIMARY KEY (function, qualifier)
     );",
    // No foreign key: what a deleted function used stays on the record.
    "CREATE TABLE usage (
        function                        TEXT NOT NULL,
        version                         TEXT NOT NULL,
        day                             TEXT NOT NULL,
        requests                        INTEGER NOT NULL,
        billed_ms                       INTEGER NOT NULL,
        gb_seconds                      REAL NOT NULL,
        provisioned_duration_gb_seconds REAL NOT NULL,
        provisioned_gb_seconds          REAL NOT NULL,
        PRIMARY KEY (function, day, version)
     );",
    // Asynchronous invocations: queued until they succeed, or end failed (kept to be seen).
    "CREATE TABLE async_events (
        request_id    TEXT PRIMARY KEY,
        function      TEXT NOT NULL,
        qualifier     TEXT,
        payload       BLOB NOT NULL,
        enqueued_ms   INTEGER NOT NULL,
        not_before_ms INTEGER NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        depth         INTEGER NOT NULL DEFAULT 0,
        state         TEXT NOT NULL,
        last_response BLOB,
        last_error    TEXT,
        condition     TEXT,
        finished_ms   INTEGER
     );
     CREATE INDEX async_events_due ON async_events (state, not_before_ms);
     CREATE TABLE event_invoke_configs (
        function           TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier          TEXT NOT NULL,
        max_retry_attempts INTEGER NOT NULL,
        max_event_age_s    INTEGER NOT NULL,
        on_success         TEXT,
        on_failure         TEXT,
        last_modified_ms   INTEGER NOT NULL,
        PRIMARY KEY (function, qualifier)
     );",
    "CREATE TABLE rules (
        name          TEXT PRIMARY KEY,
        schedule      TEXT,
        pattern       TEXT,
        enabled       INTEGER NOT NULL,
        description   TEXT NOT NULL DEFAULT '',
        created_ms    INTEGER NOT NULL,
        last_fired_ms INTEGER
     );
     CREATE TABLE rule_targets (
        rule  TEXT NOT NULL REFERENCES rules(name) ON DELETE CASCADE,
        id    TEXT NOT NULL,
        arn   TEXT NOT NULL,
        input TEXT,
        PRIMARY KEY (rule, id)
     );",
    "CREATE TABLE function_urls (
        function    TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier   TEXT NOT NULL,
        auth_type   TEXT NOT NULL,
        cors        TEXT,
        created     TEXT NOT NULL,
        modified    TEXT NOT NULL,
        PRIMARY KEY (function, qualifier)
     );",
    "CREATE TABLE http_routes (
        id         TEXT PRIMARY KEY,
        route_key  TEXT NOT NULL UNIQUE,
        function   TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier  TEXT,
        auth_type  TEXT NOT NULL,
        created    TEXT NOT NULL
     );",
    "CREATE TABLE queues (
        name               TEXT PRIMARY KEY,
        created_ms         INTEGER NOT NULL,
        visibility_s       INTEGER NOT NULL,
        retention_s        INTEGER NOT NULL,
        delay_s            INTEGER NOT NULL,
        wait_s             INTEGER NOT NULL,
        dead_letter_queue  TEXT,
        max_receive_count  INTEGER
     );
     CREATE TABLE queue_messages (
        id               TEXT PRIMARY KEY,
        queue            TEXT NOT NULL REFERENCES queues(name) ON DELETE CASCADE,
        body             TEXT NOT NULL,
        sent_ms          INTEGER NOT NULL,
        visible_at_ms    INTEGER NOT NULL,
        receive_count    INTEGER NOT NULL DEFAULT 0,
        first_receive_ms INTEGER,
        receipt          TEXT
     );
     CREATE INDEX queue_messages_visible ON queue_messages (queue, visible_at_ms);",
    "CREATE TABLE event_source_mappings (
        uuid             TEXT PRIMARY KEY,
        queue            TEXT NOT NULL,
        function         TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
        qualifier        TEXT,
        batch_size       INTEGER NOT NULL,
        window_s         INTEGER NOT NULL,
        enabled          INTEGER NOT NULL,
        report_failures  INTEGER NOT NULL,
        max_concurrency  INTEGER NOT NULL,
        last_modified_ms INTEGER NOT NULL
     );",
];

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL with NORMAL is durable across process crashes; a power loss may drop the last
        // commits but never corrupts the database.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // One server owns its store: no other process reads or writes it, so the file
        // locks SQLite would take and drop around every transaction are taken once.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.set_prepared_statement_cache_capacity(64);
        conn.pragma_update(None, "foreign_keys", true)?;
        let applied: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(migration)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().expect("store lock")
    }

    pub fn create(&self, record: &FunctionRecord) -> Result<(), StoreError> {
        let spec = serde_json::to_string(&record.spec)?;
        let result = self.conn().execute(
            "INSERT INTO functions (name, spec, code_sha256, code_size, revision_id, last_modified)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                record.spec.name,
                spec,
                record.code_sha256,
                record.code_size as i64,
                record.revision_id,
                record.last_modified
            ],
        );
        match result {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Exists(record.spec.name.clone()))
            }
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }

    pub fn update(&self, record: &FunctionRecord) -> Result<(), StoreError> {
        let spec = serde_json::to_string(&record.spec)?;
        let changed = self.conn().execute(
            "UPDATE functions SET spec = ?2, code_sha256 = ?3, code_size = ?4, revision_id = ?5, last_modified = ?6
             WHERE name = ?1",
            params![record.spec.name, spec, record.code_sha256, record.code_size as i64, record.revision_id, record.last_modified],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(record.spec.name.clone()));
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Result<FunctionRecord, StoreError> {
        self.conn()
            .query_row(
                "SELECT spec, code_sha256, code_size, revision_id, last_modified FROM functions WHERE name = ?1",
                [name],
                row_parts,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))
            .and_then(into_record)
    }

    /// Every function, by name.
    pub fn list(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT spec, code_sha256, code_size, revision_id, last_modified FROM functions ORDER BY name",
        )?;
        let rows = stmt
            .query_map([], row_parts)?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter().map(into_record).collect()
    }

    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        let changed = self
            .conn()
            .execute("DELETE FROM functions WHERE name = ?1", [name])?;
        if changed == 0 {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        Ok(())
    }

    /// Whether any function or version uses the package with this hash.
    pub fn code_in_use(&self, sha256: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM functions WHERE code_sha256 = ?1
                 UNION ALL SELECT 1 FROM versions WHERE code_sha256 = ?1
                 UNION ALL SELECT 1 FROM layer_versions WHERE code_sha256 = ?1 LIMIT 1",
                [sha256],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Stores `record` as the function's next version and returns its number.
    pub fn insert_version(&self, record: &FunctionRecord) -> Result<u32, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let last: u32 = tx
            .query_row(
                "SELECT last_version FROM functions WHERE name = ?1",
                [&record.spec.name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(record.spec.name.clone()))?;
        // Numbers are never reused, even after a version is deleted.
        let version = last + 1;
        let spec = serde_json::to_string(&record.spec)?;
        tx.execute(
            "INSERT INTO versions (function, version, spec, code_sha256, code_size, revision_id, last_modified)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![record.spec.name, version, spec, record.code_sha256, record.code_size as i64, record.revision_id, record.last_modified],
        )?;
        tx.execute(
            "UPDATE functions SET last_version = ?2 WHERE name = ?1",
            params![record.spec.name, version],
        )?;
        tx.commit()?;
        Ok(version)
    }

    pub fn get_version(&self, name: &str, version: u32) -> Result<FunctionRecord, StoreError> {
        self.conn()
            .query_row(
                "SELECT spec, code_sha256, code_size, revision_id, last_modified FROM versions
                 WHERE function = ?1 AND version = ?2",
                params![name, version],
                row_parts,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("{name}:{version}")))
            .and_then(into_record)
            .map(|r| FunctionRecord {
                version: Some(version),
                ..r
            })
    }

    /// Every published version of a function, oldest first.
    pub fn list_versions(&self, name: &str) -> Result<Vec<FunctionRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT spec, code_sha256, code_size, revision_id, last_modified, version FROM versions
             WHERE function = ?1 ORDER BY version",
        )?;
        let rows = stmt
            .query_map([name], |row| Ok((row_parts(row)?, row.get::<_, u32>(5)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(parts, v)| {
                into_record(parts).map(|r| FunctionRecord {
                    version: Some(v),
                    ..r
                })
            })
            .collect()
    }

    pub fn delete_version(&self, name: &str, version: u32) -> Result<(), StoreError> {
        let changed = self.conn().execute(
            "DELETE FROM versions WHERE function = ?1 AND version = ?2",
            params![name, version],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(format!("{name}:{version}")));
        }
        Ok(())
    }

    pub fn create_alias(&self, alias: &AliasRecord) -> Result<(), StoreError> {
        let (extra_version, extra_weight) = alias.routing.clone().unzip();
        let result = self.conn().execute(
            "INSERT INTO aliases (function, name, version, description, extra_version, extra_weight, revision_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![alias.function, alias.name, alias.version, alias.description, extra_version, extra_weight, alias.revision_id],
        );
        match result {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::AliasExists(format!(
                    "{}:{}",
                    alias.function, alias.name
                )))
            }
            other => other.map(|_| ()).map_err(StoreError::from),
        }
    }

    pub fn update_alias(&self, alias: &AliasRecord) -> Result<(), StoreError> {
        let (extra_version, extra_weight) = alias.routing.clone().unzip();
        let changed = self.conn().execute(
            "UPDATE aliases SET version = ?3, description = ?4, extra_version = ?5, extra_weight = ?6, revision_id = ?7
             WHERE function = ?1 AND name = ?2",
            params![alias.function, alias.name, alias.version, alias.description, extra_version, extra_weight, alias.revision_id],
        )?;
        if changed == 0 {
            return Err(StoreError::AliasNotFound(format!(
                "{}:{}",
                alias.function, alias.name
            )));
        }
        Ok(())
    }

    pub fn get_alias(&self, function: &str, name: &str) -> Result<AliasRecord, StoreError> {
        self.list_aliases(function)?
            .into_iter()
            .find(|a| a.name == name)
            .ok_or_else(|| StoreError::AliasNotFound(format!("{function}:{name}")))
    }

    /// Every alias of a function, by name; every alias of every function with `"*"`.
    pub fn list_aliases(&self, function: &str) -> Result<Vec<AliasRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT function, name, version, description, extra_version, extra_weight, revision_id FROM aliases
             WHERE function = ?1 OR ?1 = '*' ORDER BY function, name",
        )?;
        let rows = stmt.query_map([function], |row| {
            let extra: Option<String> = row.get(4)?;
            let weight: Option<f64> = row.get(5)?;
            Ok(AliasRecord {
                function: row.get(0)?,
                name: row.get(1)?,
                version: row.get(2)?,
                description: row.get(3)?,
                routing: extra.zip(weight),
                revision_id: row.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_alias(&self, function: &str, name: &str) -> Result<(), StoreError> {
        let changed = self.conn().execute(
            "DELETE FROM aliases WHERE function = ?1 AND name = ?2",
            params![function, name],
        )?;
        if changed == 0 {
            return Err(StoreError::AliasNotFound(format!("{function}:{name}")));
        }
        Ok(())
    }

    pub fn get_tags(
        &self,
        name: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
        let tags: String = self
            .conn()
            .query_row("SELECT tags FROM functions WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        Ok(serde_json::from_str(&tags)?)
    }

    pub fn set_tags(
        &self,
        name: &str,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        let changed = self.conn().execute(
            "UPDATE functions SET tags = ?2 WHERE name = ?1",
            params![name, serde_json::to_string(tags)?],
        )?;
        if changed == 0 {
            return Err(StoreError::NotFound(name.to_owned()));
        }
        Ok(())
    }
}

/// A published layer version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    pub name: String,
    pub version: u32,
    pub description: String,
    pub compatible_runtimes: Vec<String>,
    pub license: String,
    pub code_sha256: String,
    pub code_size: u64,
    pub unpacked_size: u64,
    pub created: String,
    /// Deleted versions stay on record for the functions that still use them.
    pub deleted: bool,
}

impl Store {
    /// Stores a new version of layer `record.name`; returns its number (never reused).
    pub fn insert_layer(&self, record: &LayerRecord) -> Result<u32, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let version: u32 = tx.query_row(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM layer_versions WHERE name = ?1",
            [&record.name],
            |r| r.get(0),
        )?;
        tx.execute(
            "INSERT INTO layer_versions (name, version, description, runtimes, license, code_sha256, code_size, unpacked_size, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                record.name,
                version,
                record.description,
                serde_json::to_string(&record.compatible_runtimes)?,
                record.license,
                record.code_sha256,
                record.code_size as i64,
                record.unpacked_size as i64,
                record.created
            ],
        )?;
        tx.commit()?;
        Ok(version)
    }

    /// Versions of layer `name` (all layers with `"*"`), deleted ones included.
    pub fn list_layers(&self, name: &str) -> Result<Vec<LayerRecord>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT name, version, description, runtimes, license, code_sha256, code_size, unpacked_size, created, deleted
             FROM layer_versions WHERE name = ?1 OR ?1 = '*' ORDER BY name, version",
        )?;
        let rows = stmt.query_map([name], |row| {
            Ok((
                LayerRecord {
                    name: row.get(0)?,
                    version: row.get(1)?,
                    description: row.get(2)?,
                    compatible_runtimes: Vec::new(),
                    license: row.get(4)?,
                    code_sha256: row.get(5)?,
                    code_size: row.get::<_, i64>(6)? as u64,
                    unpacked_size: row.get::<_, i64>(7)? as u64,
                    created: row.get(8)?,
                    deleted: row.get::<_, i64>(9)? != 0,
                },
                row.get::<_, String>(3)?,
            ))
        })?;
        rows.map(|row| {
            let (mut record, runtimes) = row?;
            record.compatible_runtimes = serde_json::from_str(&runtimes)?;
            Ok(record)
        })
        .collect()
    }

    pub fn get_layer(&self, name: &str, version: u32) -> Result<LayerRecord, StoreError> {
        self.list_layers(name)?
            .into_iter()
            .find(|l| l.version == version)
            .ok_or_else(|| StoreError::NotFound(format!("layer {name}:{version}")))
    }

    pub fn mark_layer_deleted(&self, name: &str, version: u32) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE layer_versions SET deleted = 1 WHERE name = ?1 AND version = ?2",
            params![name, version],
        )?;
        Ok(())
    }
}

/// An access key as stored: its secret sealed (see [`crate::secrets`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub sealed_secret: Vec<u8>,
    pub created: String,
}

/// A provisioned concurrency configuration, on a version number or an alias name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedRecord {
    pub function: String,
    pub qualifier: String,
    pub requested: u32,
    pub last_modified: String,
}

impl Store {
    /// Sets (`Some`) or removes (`None`) a function's reserved concurrency.
    pub fn set_reserved_concurrency(
        &self,
        function: &str,
        reserved: Option<u32>,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        match reserved {
            Some(n) => conn.execute(
                "INSERT INTO reserved_concurrency (function, reserved) VALUES (?1, ?2)
                 ON CONFLICT(function) DO UPDATE SET reserved = excluded.reserved",
                rusqlite::params![function, n],
            )?,
            None => conn.execute(
                "DELETE FROM reserved_concurrency WHERE function = ?1",
                [function],
            )?,
        };
        Ok(())
    }

    /// Creates or replaces the provisioned concurrency of a version or alias.
    pub fn put_provisioned(&self, config: &ProvisionedRecord) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO provisioned_concurrency (function, qualifier, requested, last_modified)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(function, qualifier) DO UPDATE
             SET requested = excluded.requested, last_modified = excluded.last_modified",
            rusqlite::params![
                config.function,
                config.qualifier,
                config.requested,
                config.last_modified
            ],
        )?;
        Ok(())
    }

    /// Removes the provisioned concurrency of a version or alias; whether there was one.
    pub fn delete_provisioned(&self, function: &str, qualifier: &str) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "DELETE FROM provisioned_concurrency WHERE function = ?1 AND qualifier = ?2",
            [function, qualifier],
        )?;
        Ok(n > 0)
    }

    /// The provisioned concurrency configurations of `function`, or of every function
    /// for `None`.
    pub fn list_provisioned(
        &self,
        function: Option<&str>,
    ) -> Result<Vec<ProvisionedRecord>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT function, qualifier, requested, last_modified FROM provisioned_concurrency
             WHERE ?1 IS NULL OR function = ?1 ORDER BY function, qualifier",
        )?;
        let rows = statement.query_map([function], |row| {
            Ok(ProvisionedRecord {
                function: row.get(0)?,
                qualifier: row.get(1)?,
                requested: row.get(2)?,
                last_modified: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds usage to the stored totals, in one transaction.
    pub fn add_usage(&self, usage: &[DayUsage]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut statement = tx.prepare_cached(
                "INSERT INTO usage (function, version, day, requests, billed_ms, gb_seconds,
                                    provisioned_duration_gb_seconds, provisioned_gb_seconds)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(function, day, version) DO UPDATE SET
                    requests = requests + excluded.requests,
                    billed_ms = billed_ms + excluded.billed_ms,
                    gb_seconds = gb_seconds + excluded.gb_seconds,
                    provisioned_duration_gb_seconds =
                        provisioned_duration_gb_seconds + excluded.provisioned_duration_gb_seconds,
                    provisioned_gb_seconds = provisioned_gb_seconds + excluded.provisioned_gb_seconds",
            )?;
            for d in usage {
                let u = &d.usage;
                statement.execute(rusqlite::params![
                    d.function,
                    d.version,
                    d.day,
                    u.requests as i64,
                    u.billed_ms as i64,
                    u.gb_seconds,
                    u.provisioned_duration_gb_seconds,
                    u.provisioned_gb_seconds,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Stored usage from day `since` (`YYYY-MM-DD`) on, of one function or all, by
    /// function, day and version.
    pub fn usage(&self, function: Option<&str>, since: &str) -> Result<Vec<DayUsage>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT function, version, day, requests, billed_ms, gb_seconds,
                    provisioned_duration_gb_seconds, provisioned_gb_seconds
             FROM usage WHERE (?1 IS NULL OR function = ?1) AND day >= ?2
             ORDER BY function, day, version",
        )?;
        let rows = statement.query_map(rusqlite::params![function, since], |row| {
            Ok(DayUsage {
                function: row.get(0)?,
                version: row.get(1)?,
                day: row.get(2)?,
                usage: Usage {
                    requests: row.get::<_, i64>(3)? as u64,
                    billed_ms: row.get::<_, i64>(4)? as u64,
                    gb_seconds: row.get(5)?,
                    provisioned_duration_gb_seconds: row.get(6)?,
                    provisioned_gb_seconds: row.get(7)?,
                },
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every function's reserved concurrency.
    pub fn reserved_concurrency(&self) -> Result<Vec<(String, u32)>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare_cached(
            "SELECT function, reserved FROM reserved_concurrency ORDER BY function",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn insert_key(&self, key: &StoredKey) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO access_keys (key_id, nonce, secret, created) VALUES (?1, ?2, ?3, ?4)",
            params![key.key_id, key.nonce, key.sealed_secret, key.created],
        )?;
        Ok(())
    }

    pub fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT key_id, nonce, secret, created FROM access_keys ORDER BY created, key_id",
        )?;
        let rows = stmt.query_map([], |row| {
            Ok(StoredKey {
                key_id: row.get(0)?,
                nonce: row.get(1)?,
                sealed_secret: row.get(2)?,
                created: row.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes a key; `false` if there was none.
    pub fn delete_key(&self, key_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM access_keys WHERE key_id = ?1", [key_id])?
            > 0)
    }
}

type RowParts = (String, String, i64, String, String);

fn row_parts(row: &rusqlite::Row<'_>) -> rusqlite::Result<RowParts> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn into_record(
    (spec, code_sha256, code_size, revision_id, last_modified): RowParts,
) -> Result<FunctionRecord, StoreError> {
    Ok(FunctionRecord {
        version: None,
        spec: serde_json::from_str(&spec)?,
        code_sha256,
        code_size: code_size as u64,
        revision_id,
        last_modified,
    })
}
