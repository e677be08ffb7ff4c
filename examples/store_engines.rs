//! For issue 16 only: what the hot writes of the embedded store cost on
//! another engine, side by side, at the same durability.
//!
//! `store_engines ENGINE DIR N [CALLERS]`, ENGINE one of:
//!
//! - `sqlite`: the manager's own embedded store (`SqliteStore`: its group
//!   writer, WAL sync thread and checkpointer);
//! - `fjall`: the same records on fjall, an LSM tree with a write-ahead
//!   journal, behind a group writer like ours;
//! - `log`: the floor of any engine: one append and one `fdatasync` per
//!   batch, the dedup keys and delivery states in memory only;
//! - `null`: nothing stored: what making the callbacks, the tasks and the
//!   hand-over to a writer thread cost, to subtract from the others.
//!
//! Each of N callbacks is one accepted `kf_msg_or_event` wake-up as the
//! encrypted-callback case writes it (a 560-byte envelope, its query, a
//! random dedup key, one delivery stored already claimed) and then its
//! outcome (nine in ten superseded by a newer wake-up, one delivered), each
//! answered only after its batch is on disk. CALLERS (32) tasks run at
//! once, as wrk's connections do. Printed: callbacks a second, the
//! process's CPU per callback (every thread: the engine's background work
//! included) and the bytes it made the disk write per callback.
//!
//! What `fjall` and `log` leave out, so they are a lower bound for a store
//! built on them: the retention sweep, the claim queries, the admin
//! listings and, for `log`, rebuilding its memory at start.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use tokio::sync::oneshot;
use wxkf_manager::clock::{Clock, SystemClock};
use wxkf_manager::domain::{CorpId, KfId};
use wxkf_manager::store::sqlite::SqliteStore;
use wxkf_manager::store::{
    AttemptResult, DeliveryStatus, InsertOutcome, Lease, NewDelivery, NewEvent, PayloadKind, Queue,
    Sealer,
};

/// The batch a group writer takes at most.
const MAX_BATCH: usize = 512;

#[tokio::main(worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (engine, dir, count, callers) = match &args[..] {
        [e, d, n] => (e.as_str(), PathBuf::from(d), n.parse()?, 32),
        [e, d, n, c] => (e.as_str(), PathBuf::from(d), n.parse()?, c.parse()?),
        _ => bail!("usage: store_engines sqlite|fjall|log|null DIR N [CALLERS]"),
    };
    std::fs::create_dir_all(&dir)?;
    let store: Arc<dyn HotWrites> = match engine {
        "sqlite" => Arc::new(SqliteStore::open(&dir, Sealer::default())?),
        "fjall" => Arc::new(GroupWriter::start(FjallEngine::open(&dir)?)),
        "log" => Arc::new(GroupWriter::start(LogEngine::open(&dir)?)),
        "null" => Arc::new(GroupWriter::start(NullEngine)),
        other => bail!("unknown engine {other}"),
    };
    let before = Usage::now()?;
    let started = Instant::now();
    let mut running = futures_util::stream::iter(0..count)
        .map(|i| {
            let store = store.clone();
            async move { one_callback(store.as_ref(), i).await }
        })
        .buffer_unordered(callers);
    while let Some(done) = running.next().await {
        done?;
    }
    drop(running);
    drop(store);
    let wall = started.elapsed().as_secs_f64();
    let used = Usage::now()?.since(&before);
    println!(
        "{engine:6} {count} callbacks, {callers} callers: {:.0} a second, CPU {:.1} us and disk writes {:.2} KiB per callback",
        count as f64 / wall,
        used.cpu_seconds * 1e6 / count as f64,
        used.written_bytes as f64 / 1024.0 / count as f64,
    );
    Ok(())
}

/// The two writes of the acknowledgement path, each answered once durable.
#[async_trait::async_trait]
trait HotWrites: Send + Sync {
    async fn insert(&self, event: NewEvent) -> anyhow::Result<InsertOutcome>;
    async fn finish(&self, outcome: Outcome) -> anyhow::Result<bool>;
}

/// A delivery's id, the claim that holds it, how its attempt ended.
type Outcome = (String, String, AttemptResult);

#[async_trait::async_trait]
impl HotWrites for SqliteStore {
    async fn insert(&self, event: NewEvent) -> anyhow::Result<InsertOutcome> {
        Ok(self.insert_event(&event).await?)
    }
    async fn finish(&self, outcome: Outcome) -> anyhow::Result<bool> {
        let done = self.finish_attempts(&[outcome], now_ms()).await?;
        Ok(done.first().copied().unwrap_or(false))
    }
}

async fn one_callback(store: &dyn HotWrites, i: usize) -> anyhow::Result<()> {
    let event = callback(i)?;
    let delivery = event.deliveries[0].id.clone();
    let claim = event.deliveries[0]
        .lease
        .as_ref()
        .map(|l| l.claim_id.clone())
        .context("stored claimed")?;
    if store.insert(event).await? != InsertOutcome::Stored {
        bail!("callback {i} was taken for a duplicate");
    }
    let result = if i % 10 == 9 {
        AttemptResult::Delivered
    } else {
        AttemptResult::Superseded {
            by: uuid::Uuid::now_v7().to_string(),
        }
    };
    if !store.finish((delivery, claim, result)).await? {
        bail!("the outcome of callback {i} found no claim");
    }
    Ok(())
}

/// The i-th distinct callback, sized as the benchmark's encrypted ones.
fn callback(i: usize) -> anyhow::Result<NewEvent> {
    let corp = CorpId::parse("wwbenchfast")?;
    let kf = KfId::parse(&format!("wkfast{}", i % 100))?;
    // Random-looking text, cheap to make (the cost of making the callbacks
    // is in every engine's figure; `null` shows it).
    let mut state = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut noise = |n: usize| -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..n)
            .map(|_| {
                // xorshift64*
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
                ALPHABET[(r >> 58) as usize] as char
            })
            .collect()
    };
    let now = now_ms();
    let mut delivery = NewDelivery::to_puppet(corp.clone(), Some(kf.clone()), true);
    delivery.lease = Some(Lease {
        owner: "store-engines".into(),
        until: now + 60_000,
        claim_id: uuid::Uuid::new_v4().to_string(),
    });
    Ok(NewEvent {
        id: uuid::Uuid::now_v7().to_string(),
        source: corp.as_str().to_owned(),
        dedup_key: format!("kf|{}|{kf}|{}", corp.as_str(), noise(47)),
        kind: PayloadKind::Xml,
        body: format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><Encrypt><![CDATA[{}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>",
            corp.as_str(),
            noise(448)
        )
        .into_bytes(),
        query: format!(
            "msg_signature={}&timestamp=1700000000&nonce=1372623149",
            noise(40)
        ),
        received_at: now,
        message: None,
        deliveries: vec![delivery],
    })
}

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// What the process used: CPU of all its threads, bytes it had written to
/// the disk.
struct Usage {
    cpu_seconds: f64,
    written_bytes: u64,
}

impl Usage {
    fn now() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat")?;
        // Fields after the command name, which ends with the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("/proc/self/stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        let io = std::fs::read_to_string("/proc/self/io")?;
        let written_bytes = io
            .lines()
            .find_map(|l| l.strip_prefix("write_bytes: "))
            .context("/proc/self/io")?
            .parse()?;
        Ok(Self {
            cpu_seconds: ticks as f64 / 100.0,
            written_bytes,
        })
    }

    fn since(&self, before: &Self) -> Self {
        Self {
            cpu_seconds: self.cpu_seconds - before.cpu_seconds,
            written_bytes: self.written_bytes - before.written_bytes,
        }
    }
}

/// One write waiting in a group writer's queue.
enum Op {
    Insert(NewEvent, oneshot::Sender<anyhow::Result<InsertOutcome>>),
    Finish(Outcome, oneshot::Sender<anyhow::Result<bool>>),
}

/// An engine a group writer drives: applies a batch, then makes it durable.
trait Engine: Send + 'static {
    /// Applies `ops` in order; the answers are given after `persist`.
    fn apply(&mut self, ops: &[&Op]) -> anyhow::Result<Vec<Answer>>;
    fn persist(&mut self) -> anyhow::Result<()>;
}

enum Answer {
    Inserted(InsertOutcome),
    Finished(bool),
}

/// Takes what is queued (up to `MAX_BATCH`), applies it as one batch,
/// persists, answers: as the embedded store's group commit does.
struct GroupWriter {
    queue: mpsc::Sender<Op>,
}

impl GroupWriter {
    fn start(mut engine: impl Engine) -> Self {
        let (queue, ops) = mpsc::channel::<Op>();
        std::thread::spawn(move || {
            while let Ok(first) = ops.recv() {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match ops.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                let refs: Vec<&Op> = batch.iter().collect();
                let outcome = engine
                    .apply(&refs)
                    .and_then(|answers| engine.persist().map(|()| answers));
                answer(batch, outcome);
            }
        });
        Self { queue }
    }
}

/// Each op's answer, in order, or the batch's error to all.
fn answer(batch: Vec<Op>, outcome: anyhow::Result<Vec<Answer>>) {
    match outcome {
        Ok(answers) => batch
            .into_iter()
            .zip(answers)
            .for_each(|(op, answer)| op.reply(Ok(answer))),
        Err(e) => {
            let e = e.to_string();
            batch
                .into_iter()
                .for_each(|op| op.reply(Err(anyhow::anyhow!(e.clone()))));
        }
    }
}

impl Op {
    fn reply(self, answer: anyhow::Result<Answer>) {
        let mismatch = || anyhow::anyhow!("an engine answered another kind of write");
        match self {
            Op::Insert(_, to) => drop(to.send(answer.and_then(|a| match a {
                Answer::Inserted(outcome) => Ok(outcome),
                Answer::Finished(_) => Err(mismatch()),
            }))),
            Op::Finish(_, to) => drop(to.send(answer.and_then(|a| match a {
                Answer::Finished(done) => Ok(done),
                Answer::Inserted(_) => Err(mismatch()),
            }))),
        }
    }
}

#[async_trait::async_trait]
impl HotWrites for GroupWriter {
    async fn insert(&self, event: NewEvent) -> anyhow::Result<InsertOutcome> {
        let (to, answer) = oneshot::channel();
        self.queue.send(Op::Insert(event, to))?;
        answer.await?
    }
    async fn finish(&self, outcome: Outcome) -> anyhow::Result<bool> {
        let (to, answer) = oneshot::channel();
        self.queue.send(Op::Finish(outcome, to))?;
        answer.await?
    }
}

/// Length-prefixed fields, the records' encoding on fjall and in the log.
#[derive(Default)]
struct Fields(Vec<u8>);

impl Fields {
    fn put(mut self, field: &[u8]) -> Self {
        self.0
            .extend_from_slice(&(field.len() as u32).to_le_bytes());
        self.0.extend_from_slice(field);
        self
    }
}

fn split_fields(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut fields = Vec::new();
    while bytes.len() >= 4 {
        let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let end = (4 + n).min(bytes.len());
        fields.push(&bytes[4..end]);
        bytes = &bytes[end..];
    }
    fields
}

fn event_record(e: &NewEvent) -> Vec<u8> {
    Fields::default()
        .put(e.id.as_bytes())
        .put(e.source.as_bytes())
        .put(e.dedup_key.as_bytes())
        .put(e.kind.as_str().as_bytes())
        .put(&e.body)
        .put(e.query.as_bytes())
        .put(&e.received_at.to_be_bytes())
        .0
}

/// A delivery's row: event seq, corp, kfId, status, claim, next attempt,
/// updated at, superseded by.
fn delivery_record(
    seq: u64,
    (corp, kf): (&[u8], &[u8]),
    status: DeliveryStatus,
    claim: &[u8],
    at: i64,
    by: &str,
) -> Vec<u8> {
    Fields::default()
        .put(&seq.to_be_bytes())
        .put(corp)
        .put(kf)
        .put(status.as_str().as_bytes())
        .put(claim)
        .put(&at.to_be_bytes())
        .put(&at.to_be_bytes())
        .put(by.as_bytes())
        .0
}

/// Where a delivery goes: its corp and kfId.
fn target(d: &NewDelivery) -> (&[u8], &[u8]) {
    let kf = d.kf_id.as_ref().map_or("", |k| k.as_str());
    (d.corp_id.as_str().as_bytes(), kf.as_bytes())
}

/// The claim a delivery is stored with.
fn claim_of(d: &NewDelivery) -> &str {
    d.lease.as_ref().map_or("", |l| l.claim_id.as_str())
}

/// The keys of the two indexes the SQLite schema keeps for a delivery: due
/// (status, lane, next attempt, seq) and waiting (corp, kfId, seq).
fn due_key(status: &[u8], at: i64, seq: u64) -> Vec<u8> {
    [status, b"|puppets|", &at.to_be_bytes(), &seq.to_be_bytes()].concat()
}

fn waiting_key((corp, kf): (&[u8], &[u8]), seq: u64) -> Vec<u8> {
    [corp, b"|", kf, b"|", &seq.to_be_bytes()].concat()
}

struct FjallEngine {
    db: fjall::Database,
    events: fjall::Keyspace,
    dedup: fjall::Keyspace,
    deliveries: fjall::Keyspace,
    due: fjall::Keyspace,
    waiting: fjall::Keyspace,
    seq: u64,
}

impl FjallEngine {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        let db = fjall::Database::builder(dir.join("fjall"))
            .manual_journal_persist(true)
            .open()?;
        let keyspace = |name: &str| db.keyspace(name, fjall::KeyspaceCreateOptions::default);
        Ok(Self {
            events: keyspace("events")?,
            dedup: keyspace("dedup")?,
            deliveries: keyspace("deliveries")?,
            due: keyspace("due")?,
            waiting: keyspace("waiting")?,
            db,
            seq: 0,
        })
    }
}

impl Engine for FjallEngine {
    fn apply(&mut self, ops: &[&Op]) -> anyhow::Result<Vec<Answer>> {
        let mut batch = self.db.batch();
        let mut keys_in_batch = HashSet::new();
        let mut answers = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Insert(e, _) => {
                    if !keys_in_batch.insert(e.dedup_key.as_str())
                        || self.dedup.contains_key(&e.dedup_key)?
                    {
                        answers.push(Answer::Inserted(InsertOutcome::Duplicate));
                        continue;
                    }
                    self.seq += 1;
                    let seq = self.seq;
                    batch.insert(&self.events, seq.to_be_bytes(), event_record(e));
                    batch.insert(&self.dedup, e.dedup_key.as_str(), seq.to_be_bytes());
                    for d in &e.deliveries {
                        let pending = DeliveryStatus::Pending;
                        let claim = claim_of(d).as_bytes();
                        batch.insert(
                            &self.deliveries,
                            d.id.as_str(),
                            delivery_record(seq, target(d), pending, claim, e.received_at, ""),
                        );
                        batch.insert(
                            &self.due,
                            due_key(pending.as_str().as_bytes(), e.received_at, seq),
                            d.id.as_str(),
                        );
                        batch.insert(&self.waiting, waiting_key(target(d), seq), d.id.as_str());
                    }
                    answers.push(Answer::Inserted(InsertOutcome::Stored));
                }
                Op::Finish((id, claim, result), _) => {
                    answers.push(Answer::Finished(
                        self.finish(&mut batch, id, claim, result)?,
                    ));
                }
            }
        }
        batch.commit()?;
        Ok(answers)
    }

    fn persist(&mut self) -> anyhow::Result<()> {
        self.db.persist(fjall::PersistMode::SyncData)?;
        Ok(())
    }
}

impl FjallEngine {
    /// Moves a delivery out of pending, if `claim` still holds it: rewrites
    /// its row and both index entries, as SQLite's UPDATE does. Its insert
    /// is in an earlier batch: a caller records an outcome only once its
    /// insert was answered.
    fn finish(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        id: &str,
        claim: &str,
        result: &AttemptResult,
    ) -> anyhow::Result<bool> {
        let Some(row) = self.deliveries.get(id)? else {
            return Ok(false);
        };
        let f = split_fields(&row);
        let (seq, corp, kf, held) = (u64::from_be_bytes(f[0].try_into()?), f[1], f[2], f[4]);
        let due_at = i64::from_be_bytes(f[5].try_into()?);
        if held != claim.as_bytes() {
            return Ok(false);
        }
        let (status, by) = match result {
            AttemptResult::Superseded { by } => (DeliveryStatus::Superseded, by.as_str()),
            other => (other.status().unwrap_or(DeliveryStatus::Pending), ""),
        };
        let now = now_ms();
        let pending = DeliveryStatus::Pending.as_str().as_bytes();
        batch.insert(
            &self.deliveries,
            id,
            delivery_record(seq, (corp, kf), status, b"", now, by),
        );
        batch.remove(&self.due, due_key(pending, due_at, seq));
        batch.insert(&self.due, due_key(status.as_str().as_bytes(), now, seq), id);
        batch.remove(&self.waiting, waiting_key((corp, kf), seq));
        Ok(true)
    }
}

/// One append-only file; the dedup keys and each delivery's claim and
/// status in memory.
struct LogEngine {
    file: std::fs::File,
    buffer: Vec<u8>,
    dedup: HashSet<String>,
    claims: HashMap<String, String>,
}

impl LogEngine {
    fn open(dir: &Path) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("events.log"))?;
        Ok(Self {
            file,
            buffer: Vec::new(),
            dedup: HashSet::new(),
            claims: HashMap::new(),
        })
    }
}

impl Engine for LogEngine {
    fn apply(&mut self, ops: &[&Op]) -> anyhow::Result<Vec<Answer>> {
        self.buffer.clear();
        let mut answers = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                Op::Insert(e, _) => {
                    if !self.dedup.insert(e.dedup_key.clone()) {
                        answers.push(Answer::Inserted(InsertOutcome::Duplicate));
                        continue;
                    }
                    let mut record = Fields::default().put(b"E").put(&event_record(e));
                    for d in &e.deliveries {
                        let pending = DeliveryStatus::Pending;
                        let claim = claim_of(d);
                        let row = delivery_record(
                            0,
                            target(d),
                            pending,
                            claim.as_bytes(),
                            e.received_at,
                            "",
                        );
                        record = record.put(d.id.as_bytes()).put(&row);
                        self.claims.insert(d.id.clone(), claim.to_owned());
                    }
                    self.buffer.extend_from_slice(&record.0);
                    answers.push(Answer::Inserted(InsertOutcome::Stored));
                }
                Op::Finish((id, claim, result), _) => {
                    if self.claims.get(id) != Some(claim) {
                        answers.push(Answer::Finished(false));
                        continue;
                    }
                    self.claims.remove(id);
                    let status = result.status().unwrap_or(DeliveryStatus::Pending);
                    let by = match result {
                        AttemptResult::Superseded { by } => by.as_str(),
                        _ => "",
                    };
                    let record = Fields::default()
                        .put(b"F")
                        .put(id.as_bytes())
                        .put(status.as_str().as_bytes())
                        .put(&now_ms().to_be_bytes())
                        .put(by.as_bytes());
                    self.buffer.extend_from_slice(&record.0);
                    answers.push(Answer::Finished(true));
                }
            }
        }
        self.file.write_all(&self.buffer)?;
        Ok(answers)
    }

    fn persist(&mut self) -> anyhow::Result<()> {
        self.file.sync_data()?;
        Ok(())
    }
}

/// Stores nothing: the harness's own cost.
struct NullEngine;

impl Engine for NullEngine {
    fn apply(&mut self, ops: &[&Op]) -> anyhow::Result<Vec<Answer>> {
        Ok(ops
            .iter()
            .map(|op| match op {
                Op::Insert(..) => Answer::Inserted(InsertOutcome::Stored),
                Op::Finish(..) => Answer::Finished(true),
            })
            .collect())
    }

    fn persist(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
