//! Corp credentials served from memory, so the acknowledgement path and URL
//! verification do not read the store per request.
//!
//! The cache is filled at start, refreshed from the store every few seconds
//! (so registrations made through another manager are seen), and updated at
//! once when a puppet registers through this one. A corp missing from the
//! cache is looked up in the store once and then cached until the next
//! refresh, so a flood of callbacks for an unknown corp costs one read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::{CorpId, CredentialSet};
use crate::store::{Registrations, StoreError};

type Sets = Arc<[CredentialSet]>;

#[derive(Default)]
pub struct CredentialCache {
    corps: RwLock<HashMap<CorpId, Sets>>,
}

impl CredentialCache {
    /// A corp's credential sets (possibly empty: unknown corp).
    pub async fn get(&self, store: &dyn Registrations, corp: &CorpId) -> Result<Sets, StoreError> {
        if let Some(sets) = self.read().get(corp) {
            return Ok(sets.clone());
        }
        self.reload_corp(store, corp).await
    }

    /// Re-read one corp (after a registration changed it).
    pub async fn reload_corp(
        &self,
        store: &dyn Registrations,
        corp: &CorpId,
    ) -> Result<Sets, StoreError> {
        let sets: Sets = store.corp_credentials(corp).await?.into();
        self.write().insert(corp.clone(), sets.clone());
        Ok(sets)
    }

    /// Replace the whole cache from the store.
    pub async fn refresh_all(&self, store: &dyn Registrations) -> Result<usize, StoreError> {
        let mut grouped: HashMap<CorpId, Vec<CredentialSet>> = HashMap::new();
        for (corp, set) in store.all_credentials().await? {
            grouped.entry(corp).or_default().push(set);
        }
        let fresh: HashMap<CorpId, Sets> =
            grouped.into_iter().map(|(k, v)| (k, v.into())).collect();
        let count = fresh.len();
        *self.write() = fresh;
        Ok(count)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<CorpId, Sets>> {
        self.corps.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<CorpId, Sets>> {
        self.corps.write().unwrap_or_else(|p| p.into_inner())
    }
}
