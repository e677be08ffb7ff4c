//! The command line for service providers (API.md §7.3): suites, their
//! customer corps and their keys, the same verbs as the admin API, straight
//! against the configured store. Secrets can come from the environment
//! instead of the command line (which `ps` shows).

use std::sync::Arc;

use clap::Subcommand;

use crate::cli::{print_json, print_table};
use crate::cli_channels::{issue_key, print_keys, revoke_key};
use crate::clock::{Clock, SystemClock};
use crate::domain::{Provider, Suite, SuiteBody, SuiteId};
use crate::http::admin_providers::suite_view;
use crate::store::{Providers, Store};
use crate::views::{GrantView, SuiteView};

#[derive(Subcommand)]
pub enum SuitesCommand {
    /// Register or change a WeCom suite (needs SECRETS_KEY).
    Put {
        suite_id: String,
        /// The provider's own corpId (the receiveid of URL checks).
        #[arg(long)]
        provider_corp_id: String,
        #[arg(long, env = "WXKF_SUITE_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, env = "WXKF_SUITE_ENCODING_AES_KEY", hide_env_values = true)]
        encoding_aes_key: String,
        #[arg(long, env = "WXKF_SUITE_SECRET", hide_env_values = true)]
        suite_secret: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Suites, with their newest ticket's arrival and customers (never a secret).
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        suite_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a suite and its keys (its grants are kept for a new registration).
    Delete {
        suite_id: String,
    },
    /// The corps that installed the suite (never a permanent code).
    Corps {
        suite_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Issue a key for downstream systems and puppets; printed once.
    IssueKey {
        suite_id: String,
        #[arg(long)]
        description: Option<String>,
    },
    Keys {
        suite_id: String,
        #[arg(long)]
        json: bool,
    },
    RevokeKey {
        suite_id: String,
        key_id: String,
    },
}

fn print_suites(views: &[SuiteView], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&views);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.suite_id.clone(),
                v.provider_corp_id.clone(),
                v.name.clone(),
                v.ticket_received_at
                    .clone()
                    .unwrap_or_else(|| "none yet".into()),
                v.corps.to_string(),
            ]
        })
        .collect();
    print_table(
        &["SUITE", "PROVIDER CORP", "NAME", "TICKET RECEIVED", "CORPS"],
        &rows,
    );
    Ok(())
}

async fn known(store: &dyn Store, suite_id: &str) -> anyhow::Result<Suite> {
    store
        .get_suite(&SuiteId::parse(suite_id)?)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no suite {suite_id}"))
}

pub async fn suites(store: Arc<dyn Store>, command: SuitesCommand) -> anyhow::Result<()> {
    let store = store.as_ref();
    match command {
        SuitesCommand::Put {
            suite_id,
            provider_corp_id,
            token,
            encoding_aes_key,
            suite_secret,
            name,
            json,
        } => {
            let suite = Suite::parse(
                SuiteId::parse(&suite_id)?,
                SuiteBody {
                    provider_corp_id: Some(provider_corp_id),
                    token: Some(token),
                    encoding_aes_key: Some(encoding_aes_key),
                    suite_secret: Some(suite_secret),
                    name,
                },
            )?;
            if !store.sealer().has_key() {
                anyhow::bail!("SECRETS_KEY must be set to register a suite: its grants are never kept in clear");
            }
            store.put_suite(&suite, SystemClock.now()).await?;
            print_suites(&[suite_view(store, &suite).await?], json)
        }
        SuitesCommand::List { json } => {
            let mut views = Vec::new();
            for suite in store.list_suites().await? {
                views.push(suite_view(store, &suite).await?);
            }
            print_suites(&views, json)
        }
        SuitesCommand::Show { suite_id, json } => {
            let suite = known(store, &suite_id).await?;
            print_suites(&[suite_view(store, &suite).await?], json)
        }
        SuitesCommand::Delete { suite_id } => {
            if !store
                .delete_provider(&crate::domain::Provider::Suite(SuiteId::parse(&suite_id)?))
                .await?
            {
                anyhow::bail!("no suite {suite_id}");
            }
            println!("deleted {suite_id}");
            Ok(())
        }
        SuitesCommand::Corps { suite_id, json } => {
            let suite = known(store, &suite_id).await?;
            let grants = store.list_grants(&suite.provider()).await?;
            let views: Vec<_> = grants.iter().map(GrantView::from).collect();
            if json {
                return print_json(&views);
            }
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|v| {
                    vec![
                        v.corp_id.clone(),
                        v.corp_name.clone(),
                        v.status.as_str().to_owned(),
                        v.authorized_at.clone(),
                        v.cancelled_at.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print_table(
                &["CORP", "NAME", "STATUS", "AUTHORIZED", "CANCELLED"],
                &rows,
            );
            Ok(())
        }
        SuitesCommand::IssueKey {
            suite_id,
            description,
        } => {
            let suite = known(store, &suite_id).await?;
            issue_key(store, suite.provider().scope(), description).await
        }
        SuitesCommand::Keys { suite_id, json } => {
            let scope = Provider::Suite(SuiteId::parse(&suite_id)?).scope();
            print_keys(store, &scope, json).await
        }
        SuitesCommand::RevokeKey { suite_id, key_id } => {
            let scope = Provider::Suite(SuiteId::parse(&suite_id)?).scope();
            revoke_key(store, &scope, &key_id).await
        }
    }
}
