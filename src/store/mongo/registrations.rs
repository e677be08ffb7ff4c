//! Registrations on MongoDB, in the old manager's `wxkfpuppets` documents.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Document};

use super::{get_at, get_str, now_date, MongoStore};
use crate::clock::UnixMillis;
use crate::domain::{CorpId, CredentialSet, EndpointUrl, KfId, Puppet, Registration};
use crate::store::seal::{corp_summaries, credential_sets, StoredCredentials};
use crate::store::{CorpSummary, Registrations, Sealer, StoreError};

#[async_trait]
impl Registrations for MongoStore {
    async fn get_puppet(&self, kf_id: &KfId) -> Result<Option<Puppet>, StoreError> {
        self.puppets
            .find_one(doc! {"kfOpenId": kf_id.as_str()})
            .await?
            .map(|d| puppet_from_doc(&d, &self.sealer))
            .transpose()
    }

    async fn save_registration(
        &self,
        reg: &Registration,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        self.puppets
            .update_one(
                doc! {"kfOpenId": reg.kf_id.as_str()},
                doc! {"$set": {
                    "kfOpenId": reg.kf_id.as_str(),
                    "name": &reg.kf_name,
                    "botEndpoint": reg.endpoint.as_str(),
                    "corpId": reg.corp_id.as_str(),
                    "corpSecret": self.sealer.seal(reg.corp_secret.expose()),
                    "token": self.sealer.seal(reg.credentials.token.expose()),
                    "encodingAESKey": self.sealer.seal(reg.credentials.key.expose()),
                    "online": true,
                    "lastOnlineDate": now_date(now),
                    "updatedAt": now_date(now),
                }, "$unset": {"offlineSince": ""}},
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    async fn set_offline(
        &self,
        kf_id: &KfId,
        corp_id: &CorpId,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let r = self
            .puppets
            .update_one(
                doc! {"kfOpenId": kf_id.as_str(), "corpId": corp_id.as_str()},
                doc! {"$set": {"online": false, "offlineSince": now_date(now), "updatedAt": now_date(now)}},
            )
            .await?;
        Ok(r.matched_count > 0)
    }

    async fn set_unreachable(
        &self,
        kf_id: &KfId,
        corp_id: &CorpId,
        registered_at: Option<UnixMillis>,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let mut filter =
            doc! {"kfOpenId": kf_id.as_str(), "corpId": corp_id.as_str(), "online": true};
        if let Some(at) = registered_at {
            filter.insert("lastOnlineDate", now_date(at));
        }
        let r = self
            .puppets
            .update_one(
                filter,
                doc! {"$set": {"online": false, "offlineSince": now_date(now), "updatedAt": now_date(now)}},
            )
            .await?;
        Ok(r.modified_count > 0)
    }

    async fn corp_credentials(&self, corp_id: &CorpId) -> Result<Vec<CredentialSet>, StoreError> {
        let rows = self
            .stored_credentials(doc! {"corpId": corp_id.as_str()})
            .await?;
        Ok(credential_sets(&self.sealer, &rows)
            .into_iter()
            .map(|(_, set)| set)
            .collect())
    }

    async fn all_credentials(&self) -> Result<Vec<(CorpId, CredentialSet)>, StoreError> {
        let rows = self.stored_credentials(doc! {}).await?;
        Ok(credential_sets(&self.sealer, &rows))
    }

    async fn list_puppets(
        &self,
        corp_id: Option<&CorpId>,
        online: Option<bool>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<Puppet>, StoreError> {
        let mut filter = doc! {};
        if let Some(corp) = corp_id {
            filter.insert("corpId", corp.as_str());
        }
        if let Some(online) = online {
            filter.insert("online", online);
        }
        let docs: Vec<Document> = self
            .puppets
            .find(filter)
            .sort(doc! {"kfOpenId": 1})
            .skip(offset as u64)
            // A negative limit means something else to MongoDB (one batch).
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        docs.iter()
            .map(|d| puppet_from_doc(d, &self.sealer))
            .collect()
    }

    async fn count_puppets(&self, corp_id: &CorpId) -> Result<u64, StoreError> {
        Ok(self
            .puppets
            .count_documents(doc! {"corpId": corp_id.as_str()})
            .await?)
    }

    async fn delete_puppet(&self, kf_id: &KfId) -> Result<bool, StoreError> {
        Ok(self
            .puppets
            .delete_one(doc! {"kfOpenId": kf_id.as_str()})
            .await?
            .deleted_count
            > 0)
    }

    async fn list_corps(&self) -> Result<Vec<CorpSummary>, StoreError> {
        let rows = self.stored_credentials(doc! {}).await?;
        Ok(corp_summaries(&self.sealer, &rows))
    }

    async fn rotate_credentials(
        &self,
        corp_id: &CorpId,
        new: &CredentialSet,
        previous_token: Option<&str>,
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let docs: Vec<Document> = self
            .puppets
            .find(doc! {"corpId": corp_id.as_str()})
            .projection(doc! {"kfOpenId": 1, "token": 1})
            .await?
            .try_collect()
            .await?;
        // Sealed values are randomised: compare what they open to.
        let targets: Vec<String> = docs
            .iter()
            .filter(|d| {
                previous_token
                    .is_none_or(|p| self.sealer.open(&get_str(d, "token")).is_ok_and(|t| t == p))
            })
            .map(|d| get_str(d, "kfOpenId"))
            .collect();
        if targets.is_empty() {
            return Ok(0);
        }
        let r = self
            .puppets
            .update_many(
                doc! {"kfOpenId": {"$in": &targets}},
                doc! {"$set": {
                    "token": self.sealer.seal(new.token.expose()),
                    "encodingAESKey": self.sealer.seal(new.key.expose()),
                    "updatedAt": now_date(now),
                }},
            )
            .await?;
        Ok(r.matched_count)
    }

    async fn move_puppet(
        &self,
        kf_id: &KfId,
        endpoint: &EndpointUrl,
        now: UnixMillis,
    ) -> Result<Option<CorpId>, StoreError> {
        let moved = self
            .puppets
            .find_one_and_update(
                doc! {"kfOpenId": kf_id.as_str()},
                doc! {"$set": {
                    "botEndpoint": endpoint.as_str(), "online": true,
                    "lastOnlineDate": now_date(now), "updatedAt": now_date(now),
                }, "$unset": {"offlineSince": ""}},
            )
            .projection(doc! {"corpId": 1})
            .await?;
        moved
            .map(|d| {
                CorpId::parse(d.get_str("corpId").unwrap_or_default())
                    .map_err(|_| StoreError::Corrupt(format!("puppet {kf_id}: corp id")))
            })
            .transpose()
    }
}

fn puppet_from_doc(d: &Document, sealer: &Sealer) -> Result<Puppet, StoreError> {
    crate::store::puppet::build_puppet(
        d.get_str("kfOpenId").unwrap_or_default(),
        get_str(d, "name"),
        d.get_str("botEndpoint").unwrap_or_default(),
        d.get_str("corpId").unwrap_or_default(),
        sealer.open(&get_str(d, "corpSecret"))?,
        sealer.open(&get_str(d, "token"))?,
        &sealer.open(d.get_str("encodingAESKey").unwrap_or_default())?,
        d.get_bool("online").unwrap_or(false),
        get_at(d, "lastOnlineDate"),
        get_at(d, "offlineSince"),
    )
}

impl MongoStore {
    /// (corp, token, key, online) of the puppets matching `filter`.
    async fn stored_credentials(
        &self,
        filter: Document,
    ) -> Result<Vec<StoredCredentials>, StoreError> {
        let docs: Vec<Document> = self
            .puppets
            .find(filter)
            .projection(doc! {"corpId": 1, "token": 1, "encodingAESKey": 1, "online": 1})
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .iter()
            .map(|d| StoredCredentials {
                corp_id: get_str(d, "corpId"),
                token: get_str(d, "token"),
                key: get_str(d, "encodingAESKey"),
                online: d.get_bool("online").unwrap_or(false),
            })
            .collect())
    }
}
