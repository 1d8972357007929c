//! Run metadata (`weft_run_metadata`, migration 0012): written with the run
//! in its start transaction, read back for a page of runs or one run, and
//! the `meta.k=v` filter of the runs list, answered from the
//! `(key, value, run_id)` index newest first.

use std::collections::HashMap;

use weft_core::{RunId, metadata::Metadata};

use crate::{
    Result, Store,
    db::{Arg, Tx, placeholders, push_tuple},
};

/// Writes `metadata` for `run_id` (nothing when empty), in the start's
/// transaction.
pub(crate) async fn write(tx: &mut Tx, run_id: RunId, metadata: &Metadata) -> Result<()> {
    if metadata.is_empty() {
        return Ok(());
    }
    let mut sql = String::from("INSERT INTO weft_run_metadata (run_id, key, value) VALUES ");
    let mut values: Vec<Arg> = Vec::with_capacity(metadata.len() * 3);
    for (i, (key, value)) in metadata.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        push_tuple(&mut sql, values.len() + 1, 3);
        values.push(run_id.into());
        values.push(key.into());
        values.push(value.into());
    }
    tx.execute(&sql, values).await?;
    Ok(())
}

/// Appends the metadata filter to a runs query over `weft_runs` aliased `r`:
/// one `EXISTS` per `(key, value)` pair, each a primary-key probe per run.
pub(crate) fn push_filters(sql: &mut String, values: &mut Vec<Arg>, pairs: &[(String, String)]) {
    for (key, value) in pairs {
        values.push(key.into());
        values.push(value.into());
        sql.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM weft_run_metadata m WHERE m.run_id = r.run_id AND m.key = ${} AND m.value = ${})",
            values.len() - 1,
            values.len()
        ));
    }
}

impl Store {
    /// The metadata of each of `run_ids` that has any.
    pub(crate) async fn metadata_of(&self, run_ids: &[RunId]) -> Result<HashMap<RunId, Metadata>> {
        let mut out: HashMap<RunId, Metadata> = HashMap::new();
        if run_ids.is_empty() {
            return Ok(out);
        }
        let sql = format!(
            "SELECT run_id, key, value FROM weft_run_metadata WHERE run_id IN ({})",
            placeholders(1, run_ids.len())
        );
        let rows = self
            .pool()
            .fetch_all(&sql, run_ids.iter().map(Arg::from).collect())
            .await?;
        for row in rows {
            out.entry(row.id("run_id")?)
                .or_default()
                .insert(row.text("key")?, row.text("value")?);
        }
        Ok(out)
    }
}
