//! `weft events catalog`: every history event kind (`weft_core::EventKind`)
//! with what it means and its payload fields, as text or JSON. It needs no
//! server: the catalogue is part of the binary, and a public contract.

use clap::Subcommand;
use serde_json::{Value, json};
use weft_core::EventKind;

/// `weft events` subcommands.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Every history event kind, with what it means and its payload fields.
    Catalog {
        /// Print JSON: `{"kinds": [{"kind", "description", "fields": [{"name", "type", "required", "description"}]}], "action_fields": [...]}`.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an `events` subcommand.
pub fn run(command: EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::Catalog { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&catalog())?);
            } else {
                print!("{}", catalog_text());
            }
        }
    }
    Ok(())
}

/// The catalogue as JSON.
pub fn catalog() -> Value {
    let kinds: Vec<Value> = EventKind::ALL
        .iter()
        .map(|kind| {
            let fields: Vec<Value> = kind
                .fields()
                .iter()
                .map(|f| {
                    json!({
                        "name": f.name,
                        "type": f.shape,
                        "required": f.always,
                        "description": f.description,
                    })
                })
                .collect();
            json!({
                "kind": kind.as_str(),
                "description": kind.description(),
                "fields": fields,
            })
        })
        .collect();
    let action_fields: Vec<Value> = weft_core::event::ACTION_FIELDS
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "type": f.shape,
                "required": f.always,
                "description": f.description,
            })
        })
        .collect();
    json!({ "kinds": kinds, "action_fields": action_fields })
}

/// The catalogue as text: each kind and its description, then one line per
/// payload field (`?` marks a field some events of the kind leave out).
fn catalog_text() -> String {
    let mut out = String::from(
        "Every event has seq, type, at, step and attempt (step and attempt when it concerns one); \
         the fields below are its data.\n\
         Any event written by a person's action (or an approval's timeout) also carries:\n",
    );
    for f in weft_core::event::ACTION_FIELDS {
        out.push_str(&format!(
            "    {:<14} {:<9} {}\n",
            f.name,
            format!("{}?", f.shape),
            f.description
        ));
    }
    out.push('\n');
    for kind in EventKind::ALL {
        out.push_str(&format!("{:<18} {}\n", kind.as_str(), kind.description()));
        for f in kind.fields() {
            let shape = format!("{}{}", f.shape, if f.always { "" } else { "?" });
            out.push_str(&format!(
                "    {:<14} {:<9} {}\n",
                f.name, shape, f.description
            ));
        }
    }
    out
}
