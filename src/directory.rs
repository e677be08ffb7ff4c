//! What operators configured beyond puppets (apps, suites, components, subscriptions,
//! corp credentials they added, keys), held in memory so that accepting a push reads
//! no store. Replaced as a whole from the store every second (so a change
//! made through another manager is in force here within 2 s, API.md §6.1)
//! and at once after a change made through this one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::domain::{
    App, AppKey, Component, CorpId, CredentialSet, Subscription, SubscriptionId, Suite,
};
use crate::store::{Channels, Providers, Store, StoreError};

/// How often every manager re-reads the configuration.
pub const REFRESH: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Directory {
    current: RwLock<Arc<Snapshot>>,
    /// One refresh at a time: a refresh that read the store before a change
    /// must not replace, after it, the snapshot of one that read it later.
    refreshing: tokio::sync::Mutex<()>,
}

/// The configuration at one moment.
#[derive(Default)]
pub struct Snapshot {
    apps: HashMap<String, Arc<App>>,
    suites: HashMap<String, Arc<Suite>>,
    components: HashMap<String, Arc<Component>>,
    /// By source, in creation order.
    subscriptions: HashMap<String, Vec<Arc<Subscription>>>,
    by_id: HashMap<SubscriptionId, Arc<Subscription>>,
    operator_sets: HashMap<String, Vec<CredentialSet>>,
    /// By owner (appId, or a provider's scope).
    keys: HashMap<String, Vec<AppKey>>,
}

impl Directory {
    /// Read everything again from the store and replace what is held.
    pub async fn refresh(&self, store: &dyn Store) -> Result<(), StoreError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let mut snapshot = Snapshot::default();
        for app in store.list_apps().await? {
            snapshot
                .apps
                .insert(app.app_id.as_str().to_owned(), Arc::new(app));
        }
        for suite in store.list_suites().await? {
            snapshot
                .suites
                .insert(suite.suite_id.as_str().to_owned(), Arc::new(suite));
        }
        for component in store.list_components().await? {
            snapshot
                .components
                .insert(component.app_id.as_str().to_owned(), Arc::new(component));
        }
        for subscription in store.list_subscriptions(None).await? {
            let subscription = Arc::new(subscription);
            snapshot
                .by_id
                .insert(subscription.id.clone(), subscription.clone());
            snapshot
                .subscriptions
                .entry(subscription.source.clone())
                .or_default()
                .push(subscription);
        }
        for (corp, set) in store.operator_credentials(None).await? {
            snapshot
                .operator_sets
                .entry(corp.as_str().to_owned())
                .or_default()
                .push(set);
        }
        for key in store.list_app_keys(None).await? {
            snapshot
                .keys
                .entry(key.owner.clone())
                .or_default()
                .push(key);
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snapshot);
        Ok(())
    }

    pub fn get(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keep refreshing until the task is dropped.
    pub async fn keep_fresh(self: Arc<Self>, store: Arc<dyn Store>) {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.refresh(store.as_ref()).await {
                tracing::warn!(error = %e, "refreshing apps and subscriptions failed");
            }
        }
    }
}

impl Snapshot {
    pub fn app(&self, app_id: &str) -> Option<&Arc<App>> {
        self.apps.get(app_id)
    }

    pub fn suite(&self, suite_id: &str) -> Option<&Arc<Suite>> {
        self.suites.get(suite_id)
    }

    pub fn component(&self, app_id: &str) -> Option<&Arc<Component>> {
        self.components.get(app_id)
    }

    pub fn suites(&self) -> impl Iterator<Item = &Arc<Suite>> {
        self.suites.values()
    }

    /// The suite `presented` is a key of, if any (a puppet of a suite's
    /// customer presents one as its corpSecret, §7.1).
    pub fn suite_of_key(&self, presented: &str) -> Option<Arc<Suite>> {
        self.suites
            .values()
            .find(|s| self.app_key_valid(&s.provider().scope(), presented))
            .cloned()
    }

    pub fn subscription(&self, id: &SubscriptionId) -> Option<&Arc<Subscription>> {
        self.by_id.get(id)
    }

    /// Whether any subscription takes pushes of this source.
    pub fn has_subscriptions(&self, source: &str) -> bool {
        self.subscriptions.contains_key(source)
    }

    /// The subscriptions of `source` whose filter passes the message.
    pub fn matching<'a>(
        &'a self,
        source: &str,
        message: &'a Map<String, Value>,
    ) -> impl Iterator<Item = &'a Arc<Subscription>> + 'a {
        self.subscriptions
            .get(source)
            .into_iter()
            .flatten()
            .filter(move |s| s.filter.matches(message))
    }

    /// Whether `presented` is a live key of this owner (an app, §6.4, or a
    /// provider's scope, §7).
    pub fn app_key_valid(&self, owner: &str, presented: &str) -> bool {
        // Every key of the owner is compared (no early exit on a match).
        self.keys
            .get(owner)
            .into_iter()
            .flatten()
            .fold(false, |found, key| key.matches(presented) | found)
    }

    /// The credential sets an operator added to a corp (§6.2).
    pub fn operator_sets(&self, corp: &CorpId) -> &[CredentialSet] {
        self.operator_sets
            .get(corp.as_str())
            .map_or(&[], Vec::as_slice)
    }
}
