//! Rules (EventBridge's name for them): a schedule or an event pattern, and the targets
//! that receive what matches.

use rusqlite::{OptionalExtension, params};

use crate::{Outbox, Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    /// `rate(…)` or `cron(…)`.
    pub schedule: Option<String>,
    /// An event pattern (JSON).
    pub pattern: Option<String>,
    pub enabled: bool,
    pub description: String,
    /// Epoch ms; a rate counts from here.
    pub created_ms: i64,
    /// The scheduled time it last fired for (epoch ms).
    pub last_fired_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub id: String,
    pub arn: String,
    /// A constant JSON document sent instead of the event.
    pub input: Option<String>,
}

fn rule(row: &rusqlite::Row<'_>) -> rusqlite::Result<Rule> {
    Ok(Rule {
        name: row.get(0)?,
        schedule: row.get(1)?,
        pattern: row.get(2)?,
        enabled: row.get(3)?,
        description: row.get(4)?,
        created_ms: row.get(5)?,
        last_fired_ms: row.get(6)?,
    })
}

const RULE_COLUMNS: &str =
    "name, schedule, pattern, enabled, description, created_ms, last_fired_ms";

impl Store {
    /// Creates a rule or changes one; a changed schedule starts counting again from now.
    pub fn put_rule(&self, r: &Rule) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO rules (name, schedule, pattern, enabled, description, created_ms, last_fired_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)
             ON CONFLICT(name) DO UPDATE SET
                pattern = excluded.pattern, enabled = excluded.enabled,
                description = excluded.description,
                created_ms = CASE WHEN schedule IS excluded.schedule THEN created_ms ELSE excluded.created_ms END,
                last_fired_ms = CASE WHEN schedule IS excluded.schedule THEN last_fired_ms ELSE NULL END,
                schedule = excluded.schedule",
            params![r.name, r.schedule, r.pattern, r.enabled, r.description, r.created_ms],
        )?;
        Ok(())
    }

    pub fn rule(&self, name: &str) -> Result<Option<Rule>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {RULE_COLUMNS} FROM rules WHERE name = ?1"),
                [name],
                rule,
            )
            .optional()?)
    }

    pub fn rules(&self) -> Result<Vec<Rule>, StoreError> {
        let conn = self.conn();
        let mut select =
            conn.prepare_cached(&format!("SELECT {RULE_COLUMNS} FROM rules ORDER BY name"))?;
        let rows = select.query_map([], rule)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Deletes a rule and its targets; whether there was one.
    pub fn delete_rule(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM rules WHERE name = ?1", [name])?
            > 0)
    }

    pub fn set_rule_enabled(&self, name: &str, enabled: bool) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE rules SET enabled = ?2 WHERE name = ?1",
            params![name, enabled],
        )? > 0)
    }

    /// Adds or replaces targets (by id).
    pub fn put_targets(&self, rule: &str, targets: &[Target]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO rule_targets (rule, id, arn, input) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(rule, id) DO UPDATE SET arn = excluded.arn, input = excluded.input",
            )?;
            for t in targets {
                put.execute(params![rule, t.id, t.arn, t.input])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes targets by id; returns the ids that were not there.
    pub fn remove_targets(&self, rule: &str, ids: &[String]) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut missing = Vec::new();
        for id in ids {
            let n = conn.execute(
                "DELETE FROM rule_targets WHERE rule = ?1 AND id = ?2",
                [rule, id],
            )?;
            if n == 0 {
                missing.push(id.clone());
            }
        }
        Ok(missing)
    }

    pub fn targets(&self, rule: &str) -> Result<Vec<Target>, StoreError> {
        let conn = self.conn();
        let mut select = conn.prepare_cached(
            "SELECT id, arn, input FROM rule_targets WHERE rule = ?1 ORDER BY id",
        )?;
        let rows = select.query_map([rule], |row| {
            Ok(Target {
                id: row.get(0)?,
                arn: row.get(1)?,
                input: row.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that a scheduled rule fired for `scheduled_ms` and accepts the events it
    /// sends, in one transaction: a crash cannot fire it twice or lose its events.
    /// Returns false (and does nothing) if the rule already fired for that time or later.
    pub fn fire_rule(
        &self,
        rule: &str,
        scheduled_ms: i64,
        outbox: &Outbox,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let updated = tx.execute(
            "UPDATE rules SET last_fired_ms = ?2
             WHERE name = ?1 AND (last_fired_ms IS NULL OR last_fired_ms < ?2)",
            params![rule, scheduled_ms],
        )?;
        if updated == 0 {
            return Ok(false);
        }
        crate::events::write_outbox(&tx, outbox, now_ms)?;
        tx.commit()?;
        Ok(true)
    }
}
