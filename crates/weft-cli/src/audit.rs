//! `weft audit`: the audit log of actions that have no run (registrations,
//! token changes), and the actor the CLI names on its requests.

use anyhow::Result;
use clap::Args;
use weft_client::Client;

/// Filters of `weft audit`.
#[derive(Args, Clone, Debug)]
pub(crate) struct AuditArgs {
    /// Only this action: workflow.registered, token.created, token.revoked.
    #[arg(long)]
    action: Option<String>,
    /// Only entries by this actor (a token's name).
    #[arg(long = "by")]
    by: Option<String>,
    /// Only entries since: an RFC 3339 time or a duration back from now (1h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Most entries shown, newest first (1 to 1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

/// The `X-Weft-Actor` the CLI sends: `--actor`, else with no token the OS
/// user (with a token the server knows the actor: its name), else none.
pub(crate) fn actor(given: Option<&str>, has_token: bool) -> Option<String> {
    match given.map(str::trim) {
        Some(actor) if !actor.is_empty() => Some(actor.to_owned()),
        _ if has_token => None,
        _ => whoami::username()
            .ok()
            .and_then(|name| actor_name(&name).ok()),
    }
}

/// Checks an actor's name as an HTTP header carries it: 1 to 256 printable
/// ASCII characters (`--actor`, and the OS user, which is not sent otherwise).
pub(crate) fn actor_name(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.is_empty() || text.len() > 256 || !text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err("an actor is 1 to 256 printable ASCII characters".to_owned());
    }
    Ok(text.to_owned())
}

/// Prints the audit log, as a table or as the API's JSON.
pub(crate) async fn run(client: &Client, args: &AuditArgs, json: bool) -> Result<()> {
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(action) = &args.action {
        query.push(("action", action.clone()));
    }
    if let Some(by) = &args.by {
        query.push(("actor", by.clone()));
    }
    if let Some(since) = &args.since {
        query.push(("since", since.clone()));
    }
    let list = client.list_audit(&query).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.entries.is_empty() {
        println!("no audit entries");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .entries
        .iter()
        .map(|entry| {
            vec![
                entry.at.clone(),
                entry.actor.clone(),
                entry.on_behalf_of.clone().unwrap_or_default(),
                entry.action.clone(),
                entry.target.clone(),
                entry.detail.to_string(),
            ]
        })
        .collect();
    crate::table::table(
        &["at", "actor", "on behalf of", "action", "target", "detail"],
        &rows,
    );
    Ok(())
}

/// One person's action on a run, from its history: the events one action
/// wrote share their time and their `actor`, `on_behalf_of` and `comment`.
#[derive(Debug, PartialEq)]
pub(crate) struct Action {
    pub at: String,
    /// The event types it wrote, in order (`run.cancelled`, `step.cancelled`).
    pub kinds: Vec<String>,
    pub step: Option<String>,
    pub actor: String,
    pub on_behalf_of: Option<String>,
    pub comment: Option<String>,
}

/// The actions people took on a run, in history order.
pub(crate) fn actions(events: &[weft_api::EventRecord]) -> Vec<Action> {
    let mut actions: Vec<Action> = Vec::new();
    for event in events {
        let text = |key: &str| {
            event
                .data
                .get(key)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        let Some(actor) = text("actor") else { continue };
        let (on_behalf_of, comment) = (text("on_behalf_of"), text("comment"));
        if let Some(last) = actions.last_mut()
            && last.at == event.at
            && last.actor == actor
            && last.on_behalf_of == on_behalf_of
            && last.comment == comment
        {
            last.kinds.push(event.kind.clone());
            continue;
        }
        actions.push(Action {
            at: event.at.clone(),
            kinds: vec![event.kind.clone()],
            step: event.step.clone(),
            actor,
            on_behalf_of,
            comment,
        });
    }
    actions
}

/// Prints who did what on a run (`weft run`): start, cancel, retry, approve, reject.
pub(crate) fn print_actions(events: &[weft_api::EventRecord]) {
    let actions = actions(events);
    if actions.is_empty() {
        return;
    }
    println!();
    println!("Actions:");
    for action in actions {
        let mut line = format!("  {}  {}", action.at, action.kinds.join(", "));
        if let Some(step) = &action.step {
            line.push_str(&format!(" [{step}]"));
        }
        line.push_str(&format!("  by {}", action.actor));
        if let Some(on_behalf_of) = &action.on_behalf_of {
            line.push_str(&format!(" on behalf of {on_behalf_of}"));
        }
        if let Some(comment) = &action.comment {
            line.push_str(&format!("  \"{comment}\""));
        }
        println!("{line}");
    }
}

/// Every history event of a run (all pages).
pub(crate) async fn all_events(client: &Client, id: &str) -> Result<Vec<weft_api::EventRecord>> {
    let mut events: Vec<weft_api::EventRecord> = Vec::new();
    for _ in 0..100 {
        let after = events.last().map(|e| e.seq);
        let page = client.run_events(id, after).await?.events;
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use weft_api::EventRecord;

    use super::*;

    fn event(seq: i64, kind: &str, at: &str, data: serde_json::Value) -> EventRecord {
        EventRecord {
            seq,
            kind: kind.into(),
            at: at.into(),
            step: None,
            attempt: None,
            data,
        }
    }

    #[test]
    fn actor_names_fit_a_header() {
        assert_eq!(actor_name(" alice ").as_deref(), Ok("alice"));
        assert!(actor_name("José").is_err());
        assert!(actor_name("").is_err());
        assert!(actor_name(&"x".repeat(257)).is_err());
        assert_eq!(actor(Some("bob"), true).as_deref(), Some("bob"));
        assert_eq!(actor(None, true), None);
    }

    #[test]
    fn one_action_per_group_of_events() {
        let events = [
            event(
                1,
                "run.created",
                "t1",
                json!({"version": 1, "actor": "ci", "on_behalf_of": "alice"}),
            ),
            event(2, "run.started", "t1", json!({})),
            event(3, "run.cancelled", "t2", json!({"actor": "ops"})),
            event(4, "step.cancelled", "t2", json!({"actor": "ops"})),
        ];
        let actions = actions(&events);
        assert_eq!(actions.len(), 2);
        assert_eq!(actions[0].kinds, ["run.created"]);
        assert_eq!(actions[0].on_behalf_of.as_deref(), Some("alice"));
        assert_eq!(actions[1].kinds, ["run.cancelled", "step.cancelled"]);
        assert_eq!(actions[1].actor, "ops");
    }
}
