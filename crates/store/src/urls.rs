//! Function URLs and HTTP routes: functions reachable over plain HTTP.

use rusqlite::params;

use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct UrlConfig {
    pub function: String,
    /// `$LATEST` or an alias.
    pub qualifier: String,
    /// `NONE` or `AWS_IAM`.
    pub auth_type: String,
    /// The `Cors` document as given (JSON), if any.
    pub cors: Option<String>,
    pub created: String,
    pub modified: String,
}

/// An HTTP route: `METHOD /path/{param}/{proxy+}` (or `$default`) → a function.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRecord {
    pub id: String,
    pub route_key: String,
    pub function: String,
    /// A version or alias; `$LATEST` when absent.
    pub qualifier: Option<String>,
    /// `NONE` or `AWS_IAM`.
    pub auth_type: String,
    pub created: String,
}

impl Store {
    /// Adds a route; `false` if one with the same key exists.
    pub fn add_route(&self, r: &RouteRecord) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "INSERT INTO http_routes (id, route_key, function, qualifier, auth_type, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(route_key) DO NOTHING",
            params![
                r.id,
                r.route_key,
                r.function,
                r.qualifier,
                r.auth_type,
                r.created
            ],
        )?;
        Ok(n > 0)
    }

    pub fn delete_route(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM http_routes WHERE id = ?1", [id])?
            > 0)
    }

    pub fn routes(&self) -> Result<Vec<RouteRecord>, StoreError> {
        let conn = self.conn();
        let mut select = conn.prepare_cached(
            "SELECT id, route_key, function, qualifier, auth_type, created FROM http_routes ORDER BY route_key",
        )?;
        let rows = select.query_map([], |row| {
            Ok(RouteRecord {
                id: row.get(0)?,
                route_key: row.get(1)?,
                function: row.get(2)?,
                qualifier: row.get(3)?,
                auth_type: row.get(4)?,
                created: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn put_url(&self, u: &UrlConfig) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO function_urls (function, qualifier, auth_type, cors, created, modified)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(function, qualifier) DO UPDATE SET
                auth_type = excluded.auth_type, cors = excluded.cors, modified = excluded.modified",
            params![
                u.function,
                u.qualifier,
                u.auth_type,
                u.cors,
                u.created,
                u.modified
            ],
        )?;
        Ok(())
    }

    pub fn delete_url(&self, function: &str, qualifier: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM function_urls WHERE function = ?1 AND qualifier = ?2",
            [function, qualifier],
        )? > 0)
    }

    /// The URL configurations of one function, or of all for `None`.
    pub fn urls(&self, function: Option<&str>) -> Result<Vec<UrlConfig>, StoreError> {
        let conn = self.conn();
        let mut select = conn.prepare_cached(
            "SELECT function, qualifier, auth_type, cors, created, modified FROM function_urls
             WHERE ?1 IS NULL OR function = ?1 ORDER BY function, qualifier",
        )?;
        let rows = select.query_map([function], |row| {
            Ok(UrlConfig {
                function: row.get(0)?,
                qualifier: row.get(1)?,
                auth_type: row.get(2)?,
                cors: row.get(3)?,
                created: row.get(4)?,
                modified: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
