//! Group commit for MongoDB: accepted callbacks that arrive together go to
//! the server in one unordered `insert_many`, so one round trip (and one
//! journal flush) covers many acknowledgements. Each caller is answered only
//! when the batch holding its document has been acknowledged by the server:
//! no acknowledgement before its write.
//!
//! A duplicate (11000 on the dedup index) fails only its own document; the
//! driver reports it with the document's index in the batch, and that caller
//! gets `Duplicate` while the others are stored, unless the document holding
//! the key is this very one: a retried write whose first try landed (a
//! server that does not recognise the retry refuses it as a duplicate of
//! itself; found by the stress loop on the MongoDB-wire test server). A
//! write-concern failure or
//! a lost connection fails every document of the batch (the caller answers
//! 503 and WeCom retries; a document that did land is then a duplicate).
//!
//! Up to `IN_FLIGHT` batches run at once: a lone callback never waits behind
//! a full batch, and a replica set's round trip is overlapped.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind;
use mongodb::Collection;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::store::{InsertOutcome, StoreError};

const MAX_BATCH: usize = 1_000;
const QUEUE: usize = 8_192;
const IN_FLIGHT: usize = 2;
const DUPLICATE_KEY: i32 = 11_000;

type Reply = oneshot::Sender<Result<InsertOutcome, StoreError>>;

#[derive(Clone)]
pub struct MongoGroupWriter {
    queue: mpsc::Sender<(Document, Reply)>,
}

impl MongoGroupWriter {
    /// Start the writer task; it stops when the last writer handle is dropped.
    pub fn start(events: Collection<Document>) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(events, rx));
        Self { queue }
    }

    pub async fn insert(&self, document: Document) -> Result<InsertOutcome, StoreError> {
        let stopped = || StoreError::Unavailable("the event writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        // A full queue makes callers wait here: back-pressure, not loss.
        self.queue
            .send((document, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(events: Collection<Document>, mut rx: mpsc::Receiver<(Document, Reply)>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Take a slot first: while every slot is busy, callbacks pile up in
        // the queue and the next batch takes them all.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let events = events.clone();
        tokio::spawn(async move {
            write_batch(&events, batch).await;
            drop(slot);
        });
    }
}

async fn write_batch(events: &Collection<Document>, batch: Vec<(Document, Reply)>) {
    let (documents, replies): (Vec<Document>, Vec<Reply>) = batch.into_iter().unzip();
    let identities: Vec<(Bson, Bson)> = documents
        .iter()
        .map(|d| {
            let field = |k| d.get(k).cloned().unwrap_or(Bson::Null);
            (field("_id"), field("dedupKey"))
        })
        .collect();
    let mut outcomes = match events.insert_many(documents).ordered(false).await {
        Ok(_) => vec![Ok(InsertOutcome::Stored); replies.len()],
        Err(e) => outcomes_of_failure(e, replies.len()),
    };
    if outcomes.iter().any(is_duplicate) {
        if let Err(e) = resolve_duplicates(events, &identities, &mut outcomes).await {
            // Unknown whether they landed: 503, and the resend decides.
            for outcome in &mut outcomes {
                if is_duplicate(outcome) {
                    *outcome = Err(e.clone());
                }
            }
        }
    }
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(outcome);
    }
}

fn is_duplicate(outcome: &Result<InsertOutcome, StoreError>) -> bool {
    matches!(outcome, Ok(InsertOutcome::Duplicate))
}

/// For each document refused as a duplicate, who holds its dedup key: the
/// document itself (an earlier try of this write landed) or another event.
async fn resolve_duplicates(
    events: &Collection<Document>,
    identities: &[(Bson, Bson)],
    outcomes: &mut [Result<InsertOutcome, StoreError>],
) -> Result<(), StoreError> {
    let refused: Vec<usize> = (0..outcomes.len())
        .filter(|&i| is_duplicate(&outcomes[i]))
        .collect();
    let keys: Vec<&Bson> = refused.iter().map(|&i| &identities[i].1).collect();
    let holders: HashMap<String, Bson> = events
        .find(doc! {"dedupKey": {"$in": keys}})
        .projection(doc! {"_id": 1, "dedupKey": 1})
        .await?
        .try_collect::<Vec<Document>>()
        .await?
        .into_iter()
        .filter_map(|d| {
            let key = d.get_str("dedupKey").ok()?.to_owned();
            Some((key, d.get("_id")?.clone()))
        })
        .collect();
    for i in refused {
        let (id, key) = &identities[i];
        let holder = key
            .as_str()
            .and_then(|k| holders.get(k))
            .and_then(Bson::as_str);
        outcomes[i] = Ok(InsertOutcome::of_dedup_conflict(
            id.as_str().unwrap_or_default(),
            holder,
        ));
    }
    Ok(())
}

/// What each document of a failed `insert_many` became.
fn outcomes_of_failure(
    error: mongodb::error::Error,
    count: usize,
) -> Vec<Result<InsertOutcome, StoreError>> {
    if let ErrorKind::InsertMany(failure) = &*error.kind {
        if failure.write_concern_error.is_none() {
            let by_index: HashMap<usize, i32> = failure
                .write_errors
                .iter()
                .flatten()
                .map(|w| (w.index, w.code))
                .collect();
            return (0..count)
                .map(|i| match by_index.get(&i) {
                    None => Ok(InsertOutcome::Stored),
                    Some(&DUPLICATE_KEY) => Ok(InsertOutcome::Duplicate),
                    Some(code) => Err(StoreError::Other(format!(
                        "the event was refused by MongoDB (code {code})"
                    ))),
                })
                .collect();
        }
    }
    let shared = StoreError::from(error);
    (0..count).map(|_| Err(shared.clone())).collect()
}
