//! Function metadata in SQLite (WAL mode).
//!
//! One row per function: its validated spec as JSON plus the fields the API reports.
//! The store is the control plane's; the invoke path reads functions from memory.

use std::path::Path;
use std::sync::Mutex;

use ember_core::FunctionSpec;
use rusqlite::{Connection, OptionalExtension, params};

/// A stored function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRecord {
    pub spec: FunctionSpec,
    pub code_sha256: String,
    pub code_size: u64,
    pub revision_id: String,
    pub last_modified: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("function already exists: {0}")]
    Exists(String),
    #[error("function not found: {0}")]
    NotFound(String),
    #[error("the metadata store failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error("a stored function could not be read")]
    Corrupt(#[from] serde_json::Error),
}

/// The metadata store.
pub struct Store {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    name          TEXT PRIMARY KEY,
    spec          TEXT NOT NULL,
    code_sha256   TEXT NOT NULL,
    code_size     INTEGER NOT NULL,
    revision_id   TEXT NOT NULL,
    last_modified TEXT NOT NULL
);
";

impl Store {
    /// Opens (creating if needed) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL with NORMAL is durable across process crashes; a power loss may drop the last
        // commits but never corrupts the database.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
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
        let mut stmt = conn.prepare(
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

    /// Whether any function uses the package with this hash.
    pub fn code_in_use(&self, sha256: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM functions WHERE code_sha256 = ?1 LIMIT 1",
                [sha256],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
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
        spec: serde_json::from_str(&spec)?,
        code_sha256,
        code_size: code_size as u64,
        revision_id,
        last_modified,
    })
}
