//! `wxkf-manager store copy`: move what the embedded store of `DATA_DIR`
//! holds into MongoDB (`--to`), or a MongoDB database into an embedded
//! store (`--from`); `--check` compares the counts instead of copying.

use std::sync::Arc;

use clap::{ArgGroup, Subcommand};

use crate::config::Config;
use crate::copy::{copy, counts, differences};
use crate::startup::open_store;
use crate::store::Store;

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Copy everything between the embedded store of DATA_DIR and MongoDB
    /// (idempotent; the same SECRETS_KEY must open both).
    #[command(group(ArgGroup::new("direction").required(true).args(["to", "from"])))]
    Copy {
        /// Copy the embedded store into this MongoDB database.
        #[arg(long, value_name = "MONGO_URI")]
        to: Option<String>,
        /// Copy this MongoDB database into the embedded store.
        #[arg(long, value_name = "MONGO_URI")]
        from: Option<String>,
        /// Compare the counts on both sides instead of copying (exit 1 when
        /// they differ).
        #[arg(long)]
        check: bool,
    },
}

/// `Ok(false)`: `--check` found differences.
pub async fn run(config: &Config, command: StoreCommand) -> anyhow::Result<bool> {
    let StoreCommand::Copy { to, from, check } = command;
    let embedded = {
        let mut c = config.clone();
        c.mongo_uri = None;
        open_store(&c).await?
    };
    let mongo_uri = to.as_deref().or(from.as_deref()).unwrap_or_default();
    let mongo = {
        let mut c = config.clone();
        c.mongo_uri = Some(crate::domain::Secret::new(mongo_uri));
        open_store(&c).await?
    };
    let (source, target, names): (Arc<dyn Store>, Arc<dyn Store>, _) = if to.is_some() {
        (embedded, mongo, ("embedded", "MongoDB"))
    } else {
        (mongo, embedded, ("MongoDB", "embedded"))
    };
    if check {
        let (here, there) = (
            counts(source.as_ref()).await?,
            counts(target.as_ref()).await?,
        );
        let mut kinds: Vec<&String> = here.keys().chain(there.keys()).collect();
        kinds.sort();
        kinds.dedup();
        let rows: Vec<Vec<String>> = kinds
            .iter()
            .map(|k| {
                let (a, b) = (
                    here.get(*k).copied().unwrap_or(0),
                    there.get(*k).copied().unwrap_or(0),
                );
                vec![
                    (*k).clone(),
                    a.to_string(),
                    b.to_string(),
                    if a == b { "" } else { "differs" }.into(),
                ]
            })
            .collect();
        crate::cli::print_table(&["KIND", names.0, names.1, ""], &rows);
        return Ok(differences(&here, &there).is_empty());
    }
    let started = std::time::Instant::now();
    let report = copy(source.as_ref(), target.as_ref(), |seen| {
        if seen > 0 && seen % 10_000 == 0 {
            eprintln!("{seen} deliveries read");
        }
    })
    .await?;
    let rows: Vec<Vec<String>> = report
        .0
        .iter()
        .map(|(k, (w, s))| vec![k.clone(), w.to_string(), s.to_string()])
        .collect();
    crate::cli::print_table(&["KIND", "COPIED", "ALREADY THERE"], &rows);
    println!(
        "{} -> {}: {} written in {:.1} s",
        names.0,
        names.1,
        report.written(),
        started.elapsed().as_secs_f64()
    );
    Ok(true)
}
