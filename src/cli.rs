//! The operator command line: the admin views and actions, straight against
//! the configured store. Human output is an aligned table; `--json` is for
//! scripts.

use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::clock::{Clock, SystemClock, UnixMillis};
use crate::domain::{CorpId, EndpointUrl, KfId};
use crate::store::{DeliveryFilter, DeliveryStatus, Store};
use crate::views::PuppetView;

#[derive(Subcommand)]
pub enum PuppetsCommand {
    /// List registrations.
    List {
        #[arg(long)]
        corp: Option<String>,
        /// Only online (true) or offline (false) puppets.
        #[arg(long)]
        online: Option<bool>,
        #[arg(long)]
        json: bool,
    },
    /// One registration (never its secrets) with its delivery counts.
    Show {
        kf_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Point a kfId at another endpoint: it is online there, and what
    /// waited parked for it is delivered there.
    Move { kf_id: String, endpoint: String },
}

#[derive(Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, newest first.
    List(DeliveryListArgs),
    /// Send dead letters again: one by id, or all of a kfId.
    Redrive {
        #[arg(long, conflicts_with = "kf_id", required_unless_present = "kf_id")]
        id: Option<String>,
        #[arg(long)]
        kf_id: Option<String>,
    },
}

#[derive(Args)]
pub struct DeliveryListArgs {
    /// pending, parked, delivered, dead, superseded or unroutable.
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    kf_id: Option<String>,
    #[arg(long)]
    corp: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: usize,
    #[arg(long)]
    json: bool,
}

/// Print rows as a table whose columns line up.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `views` as JSON, or as a table of `headers` with `row` of each view.
pub(crate) fn print_views<T: serde::Serialize>(
    views: &[T],
    json: bool,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        return print_json(&views);
    }
    let rows: Vec<Vec<String>> = views.iter().map(row).collect();
    print_table(headers, &rows);
    Ok(())
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn puppets(store: Arc<dyn Store>, command: PuppetsCommand) -> anyhow::Result<()> {
    match command {
        PuppetsCommand::List { corp, online, json } => {
            let corp = corp.map(|c| CorpId::parse(&c)).transpose()?;
            let puppets = store.list_puppets(corp.as_ref(), online, 10_000, 0).await?;
            let views: Vec<PuppetView> = puppets.iter().map(PuppetView::from).collect();
            if json {
                return print_json(&views);
            }
            let rows: Vec<Vec<String>> = puppets
                .iter()
                .map(|p| {
                    let r = &p.registration;
                    vec![
                        r.kf_id.to_string(),
                        r.corp_id.to_string(),
                        if p.online { "online" } else { "offline" }.to_owned(),
                        r.endpoint.as_str().to_owned(),
                        p.last_online_at
                            .map(UnixMillis::iso8601)
                            .unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(&["KFID", "CORP", "STATE", "ENDPOINT", "LAST ONLINE"], &rows);
            Ok(())
        }
        PuppetsCommand::Move { kf_id, endpoint } => {
            let kf = KfId::parse(&kf_id)?;
            let endpoint = EndpointUrl::parse(&endpoint)?;
            let Some(woken) =
                crate::delivery::move_puppet(store.as_ref(), &kf, &endpoint, SystemClock.now())
                    .await?
            else {
                anyhow::bail!("{kf}: no such kfId");
            };
            println!(
                "moved to {}: {woken} waiting wake-ups are due there (a running manager delivers them within a second)",
                endpoint.as_str()
            );
            Ok(())
        }
        PuppetsCommand::Show { kf_id, json } => {
            let kf = KfId::parse(&kf_id)?;
            let puppet = store
                .get_puppet(&kf)
                .await?
                .ok_or_else(|| anyhow::anyhow!("kfId {kf} is not registered"))?;
            let summary = store.kf_summary(&kf).await?;
            if json {
                return print_json(
                    &serde_json::json!({"puppet": PuppetView::from(&puppet), "deliveries": summary}),
                );
            }
            let r = &puppet.registration;
            let rows = vec![
                vec!["kfId".into(), r.kf_id.to_string()],
                vec!["name".into(), r.kf_name.clone()],
                vec!["corpId".into(), r.corp_id.to_string()],
                vec!["endpoint".into(), r.endpoint.as_str().to_owned()],
                vec![
                    "state".into(),
                    if puppet.online { "online" } else { "offline" }.to_owned(),
                ],
                vec![
                    "lastOnline".into(),
                    puppet
                        .last_online_at
                        .map(UnixMillis::iso8601)
                        .unwrap_or_default(),
                ],
                vec![
                    "offlineSince".into(),
                    puppet
                        .offline_since
                        .map(UnixMillis::iso8601)
                        .unwrap_or_default(),
                ],
                vec![
                    "lastDelivered".into(),
                    summary
                        .last_delivered_at
                        .map(UnixMillis::iso8601)
                        .unwrap_or_default(),
                ],
                vec!["pending".into(), summary.pending.to_string()],
                vec!["parked".into(), summary.parked.to_string()],
                vec!["dead".into(), summary.dead.to_string()],
            ];
            print_table(&["FIELD", "VALUE"], &rows);
            Ok(())
        }
    }
}

pub async fn deliveries(store: Arc<dyn Store>, command: DeliveriesCommand) -> anyhow::Result<()> {
    let now = SystemClock.now();
    match command {
        DeliveriesCommand::List(args) => {
            let status = args
                .status
                .map(|s| {
                    DeliveryStatus::parse(&s).ok_or_else(|| anyhow::anyhow!("unknown status {s}"))
                })
                .transpose()?;
            let filter = DeliveryFilter {
                status,
                corp_id: args.corp,
                kf_id: args.kf_id,
                limit: args.limit.clamp(1, 10_000),
                offset: 0,
            };
            let events = store.list_deliveries(&filter).await?;
            if args.json {
                return print_json(&events);
            }
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    vec![
                        e.id.to_string(),
                        e.status.as_str().to_owned(),
                        e.corp_id.clone(),
                        e.kf_id.clone().unwrap_or_default(),
                        e.attempts.to_string(),
                        e.received_at.iso8601(),
                        e.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ID",
                    "STATUS",
                    "CORP",
                    "KFID",
                    "ATTEMPTS",
                    "RECEIVED",
                    "LAST ERROR",
                ],
                &rows,
            );
            Ok(())
        }
        DeliveriesCommand::Redrive { id, kf_id } => {
            let n = match (id, kf_id) {
                (Some(id), _) => u64::from(store.redrive(&id.into(), now).await?),
                (None, Some(kf)) => store.redrive_dead_of_kf(&KfId::parse(&kf)?, now).await?,
                (None, None) => anyhow::bail!("give --id or --kf-id"),
            };
            println!("re-driven: {n} (a running manager delivers them within a second)");
            Ok(())
        }
    }
}
