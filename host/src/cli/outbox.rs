//! `callout outbox`: what the durable outbox holds, and the operator's levers: list, show one
//! with its attempts, retry a dead letter, purge finished entries. It works on the data dir's
//! database directly, so it runs beside a `callout serve` (which picks retried entries up at
//! its next poll) or without one.

use super::{CliError, GlobalArgs};
use crate::outbox::{Durability, ListFilter, OutboxStore, PurgeFilter, SqliteOutbox, State};

/// Arguments of `callout outbox`.
#[derive(Debug, clap::Args)]
pub struct OutboxArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: OutboxCommand,
}

/// `callout outbox` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum OutboxCommand {
    /// Entries newest first, and the count in each state.
    List {
        /// Only this state: pending, in_flight, retrying, done, dead.
        #[arg(long)]
        state: Option<String>,
        /// Only this action.
        #[arg(long)]
        action: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One entry with its payload and every attempt.
    Show {
        /// The delivery id.
        id: i64,
    },
    /// Makes a dead or retrying entry due now (same idempotency key).
    Retry {
        /// The delivery id.
        id: i64,
    },
    /// Deletes finished entries: --done and/or --dead, optionally only older ones.
    Purge {
        /// Delete delivered entries.
        #[arg(long)]
        done: bool,
        /// Delete dead letters.
        #[arg(long)]
        dead: bool,
        /// Only entries that finished more than this many hours ago.
        #[arg(long)]
        older_than_hours: Option<u64>,
    },
}

impl OutboxArgs {
    /// Runs the subcommand.
    ///
    /// # Errors
    /// A database error, an unknown id or state, or a purge without --done or --dead.
    pub async fn run(self, global: &GlobalArgs) -> anyhow::Result<()> {
        let db = global.data_dir.join(crate::audit::DB_FILE);
        let store = SqliteOutbox::open(&db, Durability::Normal)?;
        match self.command {
            OutboxCommand::List {
                state,
                action,
                limit,
                json,
            } => {
                let states = match state {
                    None => Vec::new(),
                    Some(s) => vec![State::parse(&s).ok_or_else(|| {
                        CliError::Usage(format!(
                            "--state {s:?} is not one of pending, in_flight, retrying, done, dead"
                        ))
                    })?],
                };
                let list = store.list(&ListFilter {
                    states,
                    action,
                    limit,
                    ..ListFilter::default()
                })?;
                let counts = store.counts()?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &serde_json::json!({"deliveries": list, "counts": counts})
                        )?
                    );
                    return Ok(());
                }
                println!(
                    "pending {}  in_flight {}  retrying {}  done {}  dead {}",
                    counts.pending, counts.in_flight, counts.retrying, counts.done, counts.dead
                );
                for d in list {
                    println!(
                        "{:>6}  {:<9}  {:<20}  attempts {:<3} conversation {}{}",
                        d.id,
                        d.state.as_str(),
                        d.action,
                        d.attempts,
                        d.conversation_id.as_deref().unwrap_or("-"),
                        d.last_error
                            .map(|e| format!("\n        last error: {e}"))
                            .unwrap_or_default()
                    );
                }
                Ok(())
            }
            OutboxCommand::Show { id } => {
                let d = store
                    .get(id)?
                    .ok_or_else(|| CliError::Usage(format!("no delivery {id}")))?;
                println!("{}", serde_json::to_string_pretty(&d)?);
                Ok(())
            }
            OutboxCommand::Retry { id } => {
                if store.get(id)?.is_none() {
                    return Err(CliError::Usage(format!("no delivery {id}")).into());
                }
                if store.retry(id).await? {
                    println!(
                        "delivery {id} is due now; a running callout serve delivers it at its next poll"
                    );
                    Ok(())
                } else {
                    Err(CliError::Usage(format!(
                        "delivery {id} is pending, in flight or done; only dead or retrying ones are retried"
                    ))
                    .into())
                }
            }
            OutboxCommand::Purge {
                done,
                dead,
                older_than_hours,
            } => {
                if !done && !dead {
                    return Err(
                        CliError::Usage("say what to purge: --done and/or --dead".into()).into(),
                    );
                }
                let filter = PurgeFilter {
                    done,
                    dead,
                    finished_before_ms: older_than_hours
                        .map(|h| crate::db::now_ms().saturating_sub(h.saturating_mul(3_600_000))),
                    limit: 0,
                };
                let purged = crate::outbox::purge_all(&store, &filter).await?;
                println!("purged {purged} entries");
                Ok(())
            }
        }
    }
}
