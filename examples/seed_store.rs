//! For timing `store copy` only: fills the embedded store of a directory
//! with N accepted callbacks for offline kfIds (each an event with one
//! waiting delivery), as the group-commit path writes them.
//!
//! `seed_store DATA_DIR N`

use wxkf_manager::clock::{Clock, SystemClock};
use wxkf_manager::domain::{CorpId, KfId};
use wxkf_manager::store::sqlite::SqliteStore;
use wxkf_manager::store::{NewDelivery, NewEvent, PayloadKind, Queue, Sealer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, count] = &args[..] else {
        anyhow::bail!("usage: seed_store DATA_DIR N");
    };
    let count: usize = count.parse()?;
    let store = std::sync::Arc::new(SqliteStore::open(
        std::path::Path::new(dir),
        Sealer::default(),
    )?);
    let corp = CorpId::parse("wwseed")?;
    let now = SystemClock.now();
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for i in 0..count {
        let kf = KfId::parse(&format!("wkseed{}", i % 1000))?;
        let event = NewEvent {
            id: wxkf_manager::domain::EventId::generate(),
            source: corp.as_str().to_owned(),
            dedup_key: format!("kf|wwseed|{kf}|SEED{i}"),
            kind: PayloadKind::Xml,
            body: format!("<xml><Token>SEED{i}</Token><OpenKfId>{kf}</OpenKfId></xml>")
                .into_bytes(),
            query: "msg_signature=s&timestamp=1&nonce=2".into(),
            received_at: now,
            message: None,
            deliveries: vec![NewDelivery::to_puppet(corp.clone(), Some(kf), false)],
        };
        let store = store.clone();
        pending.push(async move { store.insert_event(&event).await });
        if pending.len() >= 512 {
            use futures_util::StreamExt;
            pending.next().await.transpose()?;
        }
    }
    use futures_util::StreamExt;
    while let Some(done) = pending.next().await {
        done?;
    }
    println!("{count} events stored in {dir}");
    Ok(())
}
