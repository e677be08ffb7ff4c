//! The command line for service providers (API.md §7.3): suites and their
//! customer corps, components and their authorized accounts, and their
//! keys: the same verbs as the admin API, straight
//! against the configured store. Secrets can come from the environment
//! instead of the command line (which `ps` shows).

use std::sync::Arc;

use clap::Subcommand;

use crate::cli::print_views;
use crate::cli_channels::{issue_key, print_keys, revoke_key};
use crate::clock::{Clock, SystemClock};
use crate::domain::{AppId, Component, ComponentBody, Provider, Suite, SuiteBody, SuiteId};
use crate::http::admin_components::component_view;
use crate::http::admin_providers::suite_view;
use crate::store::{Providers, Store};
use crate::views::{AuthorizerView, ComponentView, GrantView, SuiteView};

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
    let headers = ["SUITE", "PROVIDER CORP", "NAME", "TICKET RECEIVED", "CORPS"];
    print_views(views, json, &headers, |v| {
        vec![
            v.suite_id.clone(),
            v.provider_corp_id.clone(),
            v.name.clone(),
            ticket_cell(&v.ticket_received_at),
            v.corps.to_string(),
        ]
    })
}

fn ticket_cell(received: &Option<String>) -> String {
    received.clone().unwrap_or_else(|| "none yet".into())
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
            require_secrets_key(store, "suite")?;
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
            let headers = ["CORP", "NAME", "STATUS", "AUTHORIZED", "CANCELLED"];
            print_views(&views, json, &headers, |v| {
                vec![
                    v.corp_id.clone(),
                    v.corp_name.clone(),
                    v.status.as_str().to_owned(),
                    v.authorized_at.clone(),
                    v.cancelled_at.clone().unwrap_or_default(),
                ]
            })
        }
        SuitesCommand::IssueKey {
            suite_id,
            description,
        } => {
            let suite = known(store, &suite_id).await?;
            issue_key(store, suite.provider().scope(), description).await
        }
        SuitesCommand::Keys { suite_id, json } => {
            let provider = Provider::Suite(SuiteId::parse(&suite_id)?);
            print_keys(store, &provider.scope(), json).await
        }
        SuitesCommand::RevokeKey { suite_id, key_id } => {
            let provider = Provider::Suite(SuiteId::parse(&suite_id)?);
            revoke_key(store, &provider.scope(), &key_id).await
        }
    }
}

/// A provider's grants are never kept in clear.
fn require_secrets_key(store: &dyn Store, what: &str) -> anyhow::Result<()> {
    if !store.sealer().has_key() {
        anyhow::bail!(
            "SECRETS_KEY must be set to register a {what}: its grants are never kept in clear"
        );
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum ComponentsCommand {
    /// Register or change an Open Platform component (needs SECRETS_KEY).
    Put {
        component_app_id: String,
        #[arg(long, env = "WXKF_COMPONENT_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, env = "WXKF_COMPONENT_ENCODING_AES_KEY", hide_env_values = true)]
        encoding_aes_key: String,
        #[arg(long, env = "WXKF_COMPONENT_SECRET", hide_env_values = true)]
        app_secret: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Components, with their newest ticket's arrival and accounts (never a secret).
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        component_app_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a component and its keys (its grants are kept for a new registration).
    Delete { component_app_id: String },
    /// The accounts that authorized the component (never a refresh token).
    Authorizers {
        component_app_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Issue a key for downstream systems; printed once.
    IssueKey {
        component_app_id: String,
        #[arg(long)]
        description: Option<String>,
    },
    Keys {
        component_app_id: String,
        #[arg(long)]
        json: bool,
    },
    RevokeKey {
        component_app_id: String,
        key_id: String,
    },
}

fn print_components(views: &[ComponentView], json: bool) -> anyhow::Result<()> {
    let headers = ["COMPONENT", "NAME", "TICKET RECEIVED", "AUTHORIZERS"];
    print_views(views, json, &headers, |v| {
        vec![
            v.component_app_id.clone(),
            v.name.clone(),
            ticket_cell(&v.ticket_received_at),
            v.authorizers.to_string(),
        ]
    })
}

async fn known_component(store: &dyn Store, app_id: &str) -> anyhow::Result<Component> {
    store
        .get_component(&AppId::parse(app_id)?)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no component {app_id}"))
}

pub async fn components(store: Arc<dyn Store>, command: ComponentsCommand) -> anyhow::Result<()> {
    let store = store.as_ref();
    match command {
        ComponentsCommand::Put {
            component_app_id,
            token,
            encoding_aes_key,
            app_secret,
            name,
            json,
        } => {
            let component = Component::parse(
                AppId::parse(&component_app_id)?,
                ComponentBody {
                    token: Some(token),
                    encoding_aes_key: Some(encoding_aes_key),
                    app_secret: Some(app_secret),
                    name,
                },
            )?;
            require_secrets_key(store, "component")?;
            store.put_component(&component, SystemClock.now()).await?;
            print_components(&[component_view(store, &component).await?], json)
        }
        ComponentsCommand::List { json } => {
            let mut views = Vec::new();
            for component in store.list_components().await? {
                views.push(component_view(store, &component).await?);
            }
            print_components(&views, json)
        }
        ComponentsCommand::Show {
            component_app_id,
            json,
        } => {
            let component = known_component(store, &component_app_id).await?;
            print_components(&[component_view(store, &component).await?], json)
        }
        ComponentsCommand::Delete { component_app_id } => {
            let provider = Provider::Component(AppId::parse(&component_app_id)?);
            if !store.delete_provider(&provider).await? {
                anyhow::bail!("no component {component_app_id}");
            }
            println!("deleted {component_app_id}");
            Ok(())
        }
        ComponentsCommand::Authorizers {
            component_app_id,
            json,
        } => {
            let component = known_component(store, &component_app_id).await?;
            let grants = store.list_grants(&component.provider()).await?;
            let views: Vec<_> = grants.iter().map(AuthorizerView::from).collect();
            let headers = ["APPID", "STATUS", "AUTHORIZED", "UNAUTHORIZED"];
            print_views(&views, json, &headers, |v| {
                vec![
                    v.app_id.clone(),
                    v.status.to_owned(),
                    v.authorized_at.clone(),
                    v.unauthorized_at.clone().unwrap_or_default(),
                ]
            })
        }
        ComponentsCommand::IssueKey {
            component_app_id,
            description,
        } => {
            let component = known_component(store, &component_app_id).await?;
            issue_key(store, component.provider().scope(), description).await
        }
        ComponentsCommand::Keys {
            component_app_id,
            json,
        } => {
            let provider = Provider::Component(AppId::parse(&component_app_id)?);
            print_keys(store, &provider.scope(), json).await
        }
        ComponentsCommand::RevokeKey {
            component_app_id,
            key_id,
        } => {
            let provider = Provider::Component(AppId::parse(&component_app_id)?);
            revoke_key(store, &provider.scope(), &key_id).await
        }
    }
}
