//! Who did what: the [`Actor`] of a person's action (recorded in the run's
//! history events for actions on runs) and the audit log (`weft_audit`) of
//! actions that have no run: registrations and token changes.

use serde_json::{Map, Value};

use crate::{Error, Result, Store, args, db::Arg, db::Row, db::Tx};

/// One entry of the audit log, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Increasing; the cursor of the next page is the last id of this one.
    pub id: i64,
    /// When the action was taken, epoch ms.
    pub at_ms: i64,
    /// Who took it.
    pub actor: String,
    /// Whom the actor said it acts for, if anyone.
    pub on_behalf_of: Option<String>,
    /// The action's name ([`AuditAction::as_str`]).
    pub action: String,
    /// What it was taken on (a token or workflow name).
    pub target: String,
    /// What else the action recorded.
    pub detail: Value,
}

/// A page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditPage {
    pub entries: Vec<AuditRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The person behind an action. With authentication on, `name` is the
/// token's name and `on_behalf_of` what the caller said it acts for; with it
/// off, `name` is what the caller said (or `anonymous`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's name (or the caller-supplied actor with authentication off).
    pub name: String,
    /// The person the token acted for, if the caller said.
    pub on_behalf_of: Option<String>,
}

impl Actor {
    /// An actor with no `on_behalf_of`.
    pub fn named(name: impl Into<String>) -> Actor {
        Actor {
            name: name.into(),
            on_behalf_of: None,
        }
    }

    /// The fields a history event carries for it: `actor`, and
    /// `on_behalf_of` when known.
    pub fn event_fields(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("actor".into(), self.name.clone().into());
        if let Some(on_behalf_of) = &self.on_behalf_of {
            map.insert("on_behalf_of".into(), on_behalf_of.clone().into());
        }
        map
    }
}

/// What an audit entry records: a closed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// A workflow's new version was registered (target: the workflow's name;
    /// detail: `{"version"}`).
    WorkflowRegistered,
    /// An API token was created (target: the token's id; detail: `{"name",
    /// "role", "queues", "expires_at"}` as known).
    TokenCreated,
    /// An API token was revoked (target: the token's id).
    TokenRevoked,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [AuditAction; 3] = [
        AuditAction::WorkflowRegistered,
        AuditAction::TokenCreated,
        AuditAction::TokenRevoked,
    ];

    /// The action's name in the API, the CLI and the table.
    pub const fn as_str(self) -> &'static str {
        match self {
            AuditAction::WorkflowRegistered => "workflow.registered",
            AuditAction::TokenCreated => "token.created",
            AuditAction::TokenRevoked => "token.revoked",
        }
    }

    /// Parses an action's name; `None` for anything else.
    pub fn parse(text: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

/// Filters and page of [`Store::list_audit`].
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<AuditAction>,
    /// Entries whose `actor` is exactly this.
    pub actor: Option<String>,
    /// Entries at or after this time (epoch ms).
    pub since_ms: Option<i64>,
    /// Page size, 1 to 1000 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Inserts one audit entry in an open transaction.
pub(crate) async fn insert_audit(
    tx: &mut Tx,
    at: i64,
    actor: &Actor,
    action: AuditAction,
    target: &str,
    detail: &Value,
) -> Result<()> {
    tx.execute(
        "INSERT INTO weft_audit (at, actor, on_behalf_of, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        args![
            at,
            &actor.name,
            actor.on_behalf_of.as_deref(),
            action.as_str(),
            target,
            detail.to_string()
        ],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Appends one entry to the audit log, at the store's time, in its own
    /// transaction (token changes call it; registrations write theirs in the
    /// registration's transaction).
    pub async fn append_audit(
        &self,
        actor: &Actor,
        action: AuditAction,
        target: &str,
        detail: Value,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_audit(&mut tx, self.now_ms(), actor, action, target, &detail).await?;
        tx.commit().await?;
        tracing::info!(
            component = "server",
            actor = %actor.name,
            on_behalf_of = actor.on_behalf_of.as_deref(),
            action = action.as_str(),
            target,
            "audit"
        );
        Ok(())
    }

    /// A page of the audit log, newest first; `next_cursor` continues it.
    /// `Error::Invalid` `invalid_cursor` for a cursor this never answered.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<AuditPage> {
        let limit = filter.limit.unwrap_or(50).clamp(1, 1000) as usize;
        let mut sql = String::from(
            "SELECT id, at, actor, on_behalf_of, action, target, detail FROM weft_audit WHERE 1 = 1",
        );
        let mut values: Vec<Arg> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, value: Arg| {
            values.push(value);
            sql.push_str(&clause.replace('?', &format!("${}", values.len())));
        };
        if let Some(action) = filter.action {
            push(&mut sql, " AND action = ?", action.as_str().into());
        }
        if let Some(actor) = &filter.actor {
            push(&mut sql, " AND actor = ?", actor.into());
        }
        if let Some(since) = filter.since_ms {
            push(&mut sql, " AND at >= ?", since.into());
        }
        if let Some(cursor) = &filter.cursor {
            let id = cursor
                .parse::<i64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or_else(|| Error::Invalid {
                    code: weft_core::ErrorCode::InvalidCursor,
                    message: format!(
                        "`{}` is not a cursor from this API",
                        cursor.chars().take(100).collect::<String>()
                    ),
                })?;
            push(&mut sql, " AND id < ?", id.into());
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", limit + 1));
        let rows = self.pool().fetch_all(&sql, values).await?;
        let more = rows.len() > limit;
        let entries = rows[..rows.len().min(limit)]
            .iter()
            .map(audit_entry)
            .collect::<Result<Vec<_>>>()?;
        let next_cursor = if more {
            entries.last().map(|e| e.id.to_string())
        } else {
            None
        };
        Ok(AuditPage {
            entries,
            next_cursor,
        })
    }
}

fn audit_entry(row: &Row) -> Result<AuditRecord> {
    let detail = row.text("detail")?;
    Ok(AuditRecord {
        id: row.int("id")?,
        at_ms: row.int("at")?,
        actor: row.text("actor")?,
        on_behalf_of: row.opt_text("on_behalf_of")?,
        action: row.text("action")?,
        target: row.text("target")?,
        detail: serde_json::from_str(&detail)
            .map_err(|err| row.corrupt("detail", crate::Problem::BadJson(err.to_string())))?,
    })
}

#[cfg(test)]
mod tests {
    use super::AuditAction;

    #[test]
    fn action_names_round_trip() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
        }
        assert_eq!(AuditAction::parse("run.started"), None);
    }
}
