//! MongoDB store (arrives with the MongoDB issue).
use super::StoreError;
pub struct MongoStore;
impl MongoStore {
    pub async fn connect(_uri: &str) -> Result<super::sqlite::SqliteStore, StoreError> {
        Err(StoreError::Other("not yet".into()))
    }
}
