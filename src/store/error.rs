//! Store errors: typed where callers decide on them, opaque otherwise.

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write (MongoDB 11000, SQLite UNIQUE).
    #[error("duplicate key")]
    DuplicateKey,
    /// The store could not be reached or did not answer in time; the caller
    /// answers 503 so that the sender retries.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store has no room to write (the disk is full); answered like
    /// `Unavailable`, and `/readyz` says so until space returns.
    #[error("store cannot write, disk full: {0}")]
    DiskFull(String),
    /// Stored data that does not parse (a corrupt or foreign document).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The store cannot be used with this configuration (e.g. a wrong SECRETS_KEY).
    #[error("{0}")]
    Config(String),
    #[error("store error: {0}")]
    Other(String),
}
