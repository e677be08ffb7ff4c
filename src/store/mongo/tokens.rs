//! The shared access-token cache on MongoDB.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

use super::{get_at, get_i64, get_str, MongoStore};
use crate::clock::UnixMillis;
use crate::domain::Secret;
use crate::store::{StoreError, TokenCache, TokenRecord};

#[async_trait]
impl TokenCache for MongoStore {
    async fn get_token(&self, key: &str) -> Result<Option<TokenRecord>, StoreError> {
        let Some(d) = self.tokens.find_one(doc! {"_id": key}).await? else {
            return Ok(None);
        };
        let access_token = d
            .get_str("accessToken")
            .ok()
            .map(|t| self.sealer.open(t))
            .transpose()?;
        Ok(Some(TokenRecord {
            access_token: access_token.map(Secret::new),
            expires_at: get_at(&d, "expiresAt").unwrap_or_default(),
            fetched_at: get_at(&d, "fetchedAt").unwrap_or_default(),
            negative: get_i64(&d, "negErrcode").map(|c| (c, get_str(&d, "negErrmsg"))),
            neg_until: get_at(&d, "negUntil").unwrap_or_default(),
            forced_at: get_at(&d, "forcedAt").unwrap_or_default(),
            lease_until: get_at(&d, "leaseUntil").unwrap_or_default(),
        }))
    }

    async fn try_lease_token(
        &self,
        key: &str,
        owner: &str,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<bool, StoreError> {
        let taken = self
            .tokens
            .update_one(
                doc! {"_id": key, "$or": [{"leaseUntil": {"$lte": now}}, {"leaseUntil": {"$exists": false}}]},
                doc! {"$set": {"leaseOwner": owner, "leaseUntil": until}},
            )
            .upsert(true)
            .await;
        match taken.map_err(StoreError::from) {
            Ok(_) => Ok(true),
            // The record exists with a running lease: the upsert collided.
            Err(StoreError::DuplicateKey) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn save_token(&self, key: &str, r: &TokenRecord) -> Result<(), StoreError> {
        let mut set = doc! {
            "expiresAt": r.expires_at, "fetchedAt": r.fetched_at, "negUntil": r.neg_until,
            "leaseOwner": Bson::Null, "leaseUntil": 0i64,
        };
        let mut unset = doc! {};
        match &r.access_token {
            Some(t) => {
                set.insert("accessToken", self.sealer.seal(t.expose()));
                set.insert("accessTokenFp", self.sealer.fingerprint(t.expose()))
            }
            None => {
                unset.insert("accessTokenFp", "");
                unset.insert("accessToken", "")
            }
        };
        match &r.negative {
            Some((code, msg)) => {
                set.insert("negErrcode", code);
                set.insert("negErrmsg", msg);
            }
            None => {
                unset.insert("negErrcode", "");
                unset.insert("negErrmsg", "");
            }
        }
        let mut update = doc! {"$set": set, "$max": {"forcedAt": r.forced_at}};
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        self.tokens
            .update_one(doc! {"_id": key}, update)
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn release_token_lease(&self, key: &str, owner: &str) -> Result<(), StoreError> {
        self.tokens
            .update_one(
                doc! {"_id": key, "leaseOwner": owner},
                doc! {"$set": {"leaseOwner": Bson::Null, "leaseUntil": 0i64}},
            )
            .await?;
        Ok(())
    }

    async fn mark_token_forced(
        &self,
        key: &str,
        now: UnixMillis,
        not_before: UnixMillis,
    ) -> Result<bool, StoreError> {
        let marked = self
            .tokens
            .update_one(
                doc! {"_id": key, "$or": [{"forcedAt": {"$lte": not_before}}, {"forcedAt": {"$exists": false}}]},
                doc! {"$set": {"forcedAt": now}},
            )
            .upsert(true)
            .await;
        match marked.map_err(StoreError::from) {
            Ok(_) => Ok(true),
            Err(StoreError::DuplicateKey) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn token_keys(&self) -> Result<Vec<String>, StoreError> {
        let found: Vec<Document> = self
            .tokens
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .projection(doc! {"_id": 1})
            .await?
            .try_collect()
            .await?;
        Ok(found
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(str::to_owned))
            .collect())
    }

    async fn invalidate_access_token(&self, token: &str) -> Result<u64, StoreError> {
        let r = self
            .tokens
            .update_many(
                doc! {"accessTokenFp": self.sealer.fingerprint(token)},
                doc! {"$unset": {"accessToken": "", "accessTokenFp": ""}, "$set": {"expiresAt": 0i64}},
            )
            .await?;
        Ok(r.modified_count)
    }
}
