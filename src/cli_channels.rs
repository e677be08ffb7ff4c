//! The command line for channels (API.md §6): apps and subscriptions, the
//! same verbs as the admin API, straight against the configured store. A
//! running manager takes a change within a second. Secrets can come from
//! the environment instead of the command line (which `ps` shows).

use std::sync::Arc;

use clap::Subcommand;

use crate::cli::{print_json, print_table};
use crate::clock::{Clock, SystemClock};
use crate::domain::{
    App, AppBody, AppId, AppKey, Subscription, SubscriptionBody, SubscriptionFilter,
};
use crate::store::{Channels, Store};
use crate::views::{AppKeyView, AppView, SubscriptionView};

#[derive(Subcommand)]
pub enum AppsCommand {
    /// Register or change an Official Account or Mini Program.
    Put {
        app_id: String,
        /// official_account, mini_program or store.
        #[arg(long)]
        kind: String,
        /// The push token (3 to 32 of [A-Za-z0-9]).
        #[arg(long, env = "WXKF_APP_TOKEN", hide_env_values = true)]
        token: String,
        /// For safe and compatible mode.
        #[arg(long, env = "WXKF_APP_ENCODING_AES_KEY", hide_env_values = true)]
        encoding_aes_key: Option<String>,
        /// For access tokens and the API proxy.
        #[arg(long, env = "WXKF_APP_SECRET", hide_env_values = true)]
        app_secret: Option<String>,
        /// Refuse plaintext pushes.
        #[arg(long)]
        require_encryption: bool,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List apps (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        app_id: String,
        #[arg(long)]
        json: bool,
    },
    Delete {
        app_id: String,
    },
    /// Issue a key for downstream systems (§6.4); printed once.
    IssueKey {
        app_id: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// An app's keys (never the keys themselves).
    Keys {
        app_id: String,
        #[arg(long)]
        json: bool,
    },
    RevokeKey {
        app_id: String,
        key_id: String,
    },
}

#[derive(Subcommand)]
pub enum SubscriptionsCommand {
    /// Create one; its signing secret is printed once.
    Create {
        /// An appId or corpId.
        #[arg(long)]
        source: String,
        #[arg(long)]
        endpoint: String,
        /// Take only these MsgTypes (repeat the flag for several).
        #[arg(long)]
        msg_type: Vec<String>,
        #[arg(long)]
        event: Vec<String>,
        #[arg(long)]
        change_type: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    List {
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        json: bool,
    },
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    Delete {
        id: String,
    },
}

fn print_apps(apps: &[App], json: bool) -> anyhow::Result<()> {
    let views: Vec<_> = apps.iter().map(AppView::from).collect();
    if json {
        return print_json(&views);
    }
    let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.app_id.clone(),
                v.kind.as_str().to_owned(),
                v.name.clone(),
                yes(v.encryption),
                yes(v.require_encryption),
                yes(v.tokens),
            ]
        })
        .collect();
    print_table(
        &["APPID", "KIND", "NAME", "ENCRYPTION", "REQUIRED", "TOKENS"],
        &rows,
    );
    Ok(())
}

pub async fn apps(store: Arc<dyn Store>, command: AppsCommand) -> anyhow::Result<()> {
    match command {
        AppsCommand::Put {
            app_id,
            kind,
            token,
            encoding_aes_key,
            app_secret,
            require_encryption,
            name,
            json,
        } => {
            let app = App::parse(
                AppId::parse(&app_id)?,
                AppBody {
                    kind: Some(kind),
                    token: Some(token),
                    encoding_aes_key,
                    app_secret,
                    require_encryption: Some(require_encryption),
                    name,
                },
            )?;
            store.put_app(&app, SystemClock.now()).await?;
            print_apps(&[app], json)
        }
        AppsCommand::List { json } => print_apps(&store.list_apps().await?, json),
        AppsCommand::Show { app_id, json } => {
            let app = store
                .get_app(&AppId::parse(&app_id)?)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no app {app_id}"))?;
            print_apps(&[app], json)
        }
        AppsCommand::Delete { app_id } => {
            if !store.delete_app(&AppId::parse(&app_id)?).await? {
                anyhow::bail!("no app {app_id}");
            }
            println!("deleted {app_id}");
            Ok(())
        }
        AppsCommand::IssueKey {
            app_id,
            description,
        } => {
            let app_id = AppId::parse(&app_id)?;
            if store.get_app(&app_id).await?.is_none() {
                anyhow::bail!("no app {app_id}");
            }
            issue_key(store.as_ref(), app_id.to_string(), description).await
        }
        AppsCommand::Keys { app_id, json } => {
            print_keys(store.as_ref(), AppId::parse(&app_id)?.as_str(), json).await
        }
        AppsCommand::RevokeKey { app_id, key_id } => {
            revoke_key(store.as_ref(), AppId::parse(&app_id)?.as_str(), &key_id).await
        }
    }
}

/// Issue a key for `owner` (an appId or a provider's scope); printed once.
pub(crate) async fn issue_key(
    store: &dyn Store,
    owner: String,
    description: Option<String>,
) -> anyhow::Result<()> {
    let (key, shown) = AppKey::issue(owner, description, SystemClock.now())?;
    store.put_app_key(&key).await?;
    println!("key id: {}", key.id);
    println!("key (shown once): {}", shown.expose());
    Ok(())
}

/// The keys of `owner`, never the keys themselves.
pub(crate) async fn print_keys(store: &dyn Store, owner: &str, json: bool) -> anyhow::Result<()> {
    let keys = store.list_app_keys(Some(owner)).await?;
    let views: Vec<_> = keys.iter().map(AppKeyView::from).collect();
    if json {
        return print_json(&views);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| vec![v.id.clone(), v.created_at.clone(), v.description.clone()])
        .collect();
    print_table(&["ID", "CREATED", "DESCRIPTION"], &rows);
    Ok(())
}

pub(crate) async fn revoke_key(store: &dyn Store, owner: &str, key_id: &str) -> anyhow::Result<()> {
    if !store.delete_app_key(owner, key_id).await? {
        anyhow::bail!("no key {key_id} of {owner}");
    }
    println!("revoked {key_id}");
    Ok(())
}

fn print_subscriptions(subscriptions: &[Subscription], json: bool) -> anyhow::Result<()> {
    let views: Vec<_> = subscriptions.iter().map(SubscriptionView::from).collect();
    if json {
        return print_json(&views);
    }
    let rows: Vec<Vec<String>> = views
        .iter()
        .map(|v| {
            vec![
                v.id.clone(),
                v.source.clone(),
                v.endpoint.clone(),
                serde_json::to_string(&v.filter).unwrap_or_default(),
                v.description.clone(),
            ]
        })
        .collect();
    print_table(
        &["ID", "SOURCE", "ENDPOINT", "FILTER", "DESCRIPTION"],
        &rows,
    );
    Ok(())
}

pub async fn subscriptions(
    store: Arc<dyn Store>,
    command: SubscriptionsCommand,
) -> anyhow::Result<()> {
    match command {
        SubscriptionsCommand::Create {
            source,
            endpoint,
            msg_type,
            event,
            change_type,
            description,
        } => {
            let now = SystemClock.now();
            let subscription = Subscription::create(
                SubscriptionBody {
                    source: Some(source),
                    endpoint: Some(endpoint),
                    filter: Some(SubscriptionFilter {
                        msg_type,
                        event,
                        change_type,
                    }),
                    description,
                },
                now,
            )?;
            store.put_subscription(&subscription, now).await?;
            print_subscriptions(std::slice::from_ref(&subscription), false)?;
            println!("secret (shown once): {}", subscription.secret.expose());
            Ok(())
        }
        SubscriptionsCommand::List { source, json } => {
            print_subscriptions(&store.list_subscriptions(source.as_deref()).await?, json)
        }
        SubscriptionsCommand::Show { id, json } => {
            let subscription = store
                .get_subscription(&id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no subscription {id}"))?;
            print_subscriptions(&[subscription], json)
        }
        SubscriptionsCommand::Delete { id } => {
            if !store.delete_subscription(&id).await? {
                anyhow::bail!("no subscription {id}");
            }
            println!("deleted {id}");
            Ok(())
        }
    }
}
