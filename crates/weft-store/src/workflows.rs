//! Workflow definitions and their versions. A definition is immutable once
//! stored, so parsed definitions are cached by (name, version) forever.

use std::sync::Arc;

use serde_json::Value;
use weft_core::Definition;

use crate::{Actor, AuditAction, Error, Problem, Result, Store, args};

/// What registering a manifest did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The workflow's name.
    pub name: String,
    /// The latest version now: the new one, or the unchanged latest.
    pub version: i64,
    /// False when the manifest equals the latest version: nothing was written.
    pub created: bool,
}

/// A workflow at its latest version, as the list reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowInfo {
    pub name: String,
    pub version: i64,
    /// The manifest's `description`, if any.
    pub description: Option<String>,
    /// How many steps that version has.
    pub steps: usize,
    /// When that version was registered, epoch ms.
    pub created_at_ms: i64,
}

/// One version of a workflow with its manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowVersion {
    pub name: String,
    pub version: i64,
    /// The manifest's `description`, if any.
    pub description: Option<String>,
    /// When this version was registered, epoch ms.
    pub created_at_ms: i64,
    /// The stored canonical manifest (keys sorted), as JSON.
    pub manifest: Value,
    /// Every version registered, oldest first.
    pub versions: Vec<i64>,
}

impl Store {
    /// Registers a definition. The same manifest as the latest version is a
    /// no-op; a changed one becomes the next version. Runs keep their version.
    pub async fn put_workflow(&self, def: &Definition) -> Result<Registered> {
        self.register(def, None).await
    }

    /// [`Store::put_workflow`] by a person: a new version is recorded as
    /// `workflow.registered` by `actor` in the audit log, in the same
    /// transaction (an unchanged manifest records nothing).
    pub async fn put_workflow_as(&self, def: &Definition, actor: &Actor) -> Result<Registered> {
        self.register(def, Some(actor)).await
    }

    async fn register(&self, def: &Definition, actor: Option<&Actor>) -> Result<Registered> {
        let mut tx = self.begin().await?;
        let latest = tx
            .fetch_optional(
                "SELECT version, manifest FROM weft_workflows WHERE name = $1 ORDER BY version DESC LIMIT 1",
                args![&def.name],
            )
            .await?;
        if let Some(row) = &latest
            && row.text("manifest")? == def.canonical
        {
            return Ok(Registered {
                name: def.name.clone(),
                version: row.int("version")?,
                created: false,
            });
        }
        let version = match latest {
            Some(row) => row.int("version")? + 1,
            None => 1,
        };
        let now = self.now_ms();
        tx.execute(
            "INSERT INTO weft_workflows (name, version, manifest, created_at) VALUES ($1, $2, $3, $4)",
            args![&def.name, version, &def.canonical, now],
        )
        .await
        .map_err(|err| match err {
            Error::Conflict { .. } => Error::Conflict {
                code: weft_core::ErrorCode::ConcurrentUpdate,
                message: format!("workflow `{}` was registered concurrently; try again", def.name),
            },
            other => other,
        })?;
        if let Some(actor) = actor {
            let detail = serde_json::json!({ "version": version });
            crate::audit::insert_audit(
                &mut tx,
                now,
                actor,
                AuditAction::WorkflowRegistered,
                &def.name,
                &detail,
            )
            .await?;
        }
        tx.commit().await?;
        tracing::info!(component = "server", workflow = %def.name, version, actor = actor.map(|a| a.name.as_str()), on_behalf_of = actor.and_then(|a| a.on_behalf_of.as_deref()), "workflow registered");
        Ok(Registered {
            name: def.name.clone(),
            version,
            created: true,
        })
    }

    pub async fn list_workflows(&self) -> Result<Vec<WorkflowInfo>> {
        let rows = self
            .pool()
            .fetch_all(
                "SELECT w.name, w.version, w.manifest, w.created_at FROM weft_workflows w \
                 WHERE w.version = (SELECT MAX(v.version) FROM weft_workflows v WHERE v.name = w.name) \
                 ORDER BY w.name",
                Vec::new(),
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let def = self
                .definition(&row.text("name")?, row.int("version")?)
                .await?;
            out.push(WorkflowInfo {
                name: def.name.clone(),
                version: row.int("version")?,
                description: def.description.clone(),
                steps: def.steps.len(),
                created_at_ms: row.int("created_at")?,
            });
        }
        Ok(out)
    }

    pub async fn get_workflow(&self, name: &str, version: Option<i64>) -> Result<WorkflowVersion> {
        let rows = self
            .pool()
            .fetch_all(
                "SELECT version, manifest, created_at FROM weft_workflows WHERE name = $1 ORDER BY version",
                args![name],
            )
            .await?;
        let versions: Vec<i64> = rows
            .iter()
            .map(|r| r.int("version"))
            .collect::<Result<_>>()?;
        let row = match version {
            Some(v) => versions
                .iter()
                .position(|&n| n == v)
                .and_then(|i| rows.get(i)),
            None => rows.last(),
        }
        .ok_or_else(|| Error::NotFound {
            what: "workflow",
            id: name.to_owned(),
        })?;
        let def = self.definition(name, row.int("version")?).await?;
        Ok(WorkflowVersion {
            name: name.to_owned(),
            version: row.int("version")?,
            description: def.description.clone(),
            created_at_ms: row.int("created_at")?,
            manifest: serde_json::from_str(&row.text("manifest")?).map_err(|err| {
                Error::corrupt(
                    format!("manifest of {name}"),
                    None,
                    Problem::BadJson(err.to_string()),
                )
            })?,
            versions,
        })
    }

    /// The latest version number of a workflow.
    pub(crate) async fn latest_version(&self, tx: &mut crate::db::Tx, name: &str) -> Result<i64> {
        tx.fetch_optional(
            "SELECT MAX(version) AS version FROM weft_workflows WHERE name = $1",
            args![name],
        )
        .await?
        .map(|row| row.opt_int("version"))
        .transpose()?
        .flatten()
        .ok_or_else(|| Error::NotFound {
            what: "workflow",
            id: name.to_owned(),
        })
    }

    /// A parsed definition, from the cache or the database.
    pub async fn definition(&self, name: &str, version: i64) -> Result<Arc<Definition>> {
        if let Some(def) = self.cached_definition(name, version) {
            return Ok(def);
        }
        let row = self
            .pool()
            .fetch_optional(
                "SELECT manifest FROM weft_workflows WHERE name = $1 AND version = $2",
                args![name, version],
            )
            .await?;
        self.cache_definition(name, version, row)
    }

    /// The same, read through an open transaction on a cache miss: a caller
    /// holding a connection must not wait for a second one, or a burst of
    /// such callers can exhaust the pool and deadlock on it.
    pub(crate) async fn definition_in(
        &self,
        tx: &mut crate::db::Tx,
        name: &str,
        version: i64,
    ) -> Result<Arc<Definition>> {
        if let Some(def) = self.cached_definition(name, version) {
            return Ok(def);
        }
        let row = tx
            .fetch_optional(
                "SELECT manifest FROM weft_workflows WHERE name = $1 AND version = $2",
                args![name, version],
            )
            .await?;
        self.cache_definition(name, version, row)
    }

    fn cached_definition(&self, name: &str, version: i64) -> Option<Arc<Definition>> {
        let key = (name.to_owned(), version);
        self.inner
            .definitions
            .read()
            .expect("definition cache lock")
            .get(&key)
            .cloned()
    }

    fn cache_definition(
        &self,
        name: &str,
        version: i64,
        row: Option<crate::db::Row>,
    ) -> Result<Arc<Definition>> {
        let row = row.ok_or_else(|| Error::NotFound {
            what: "workflow",
            id: format!("{name} v{version}"),
        })?;
        let def = Definition::parse_stored(&row.text("manifest")?).map_err(|err| {
            Error::corrupt(
                format!("manifest of {name} v{version}"),
                None,
                Problem::BadJson(err.to_string()),
            )
        })?;
        let def = Arc::new(def);
        self.inner
            .definitions
            .write()
            .expect("definition cache lock")
            .insert((name.to_owned(), version), def.clone());
        Ok(def)
    }
}
