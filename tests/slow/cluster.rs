//! Three manager processes on one MongoDB, as `deploy/` runs them behind a
//! load balancer (here: round robin in the test client).

use std::collections::HashSet;
use std::time::Duration;

use futures_util::StreamExt;

use crate::support::require_mongo;
use crate::support::{delivered_tokens, ManagerProcess};
use crate::support::{free_port, Corp};
use crate::support::{FakePuppet, FakeWecom};

#[tokio::test]
#[ignore = "needs MongoDB: scripts/test runs it (MONGO_URI, --include-ignored)"]
async fn three_managers_share_the_work_and_survive_losing_one() {
    let uri = require_mongo();
    let wecom = FakeWecom::start().await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwcluster");
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let bases: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let token_url = format!("{}/cgi-bin/gettoken", wecom.base);
    let env = [
        ("COALESCE_WAKEUPS", "false"),
        ("ACCESS_TOKEN_URL", token_url.as_str()),
    ];
    let mut managers: Vec<ManagerProcess> = (0..3)
        .map(|i| ManagerProcess::start_with(ports[i], dirs[i].path(), Some(&uri), &env))
        .collect();
    for (m, base) in managers.iter().zip(&bases) {
        m.wait_healthy(base).await;
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in 0..10 {
        let r = client
            .post(format!("{}/puppetWxkfManager/register", bases[i % 3]))
            .json(&serde_json::json!({"kfId": format!("wkc{i}"), "kfName": "", "endpoint": puppet.url, "corpId": corp.id,
                "corpSecret": corp.secret, "token": corp.token, "encodingAESKey": corp.key}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // 300 callbacks, round robin; a failed send moves on to the next manager,
    // as a load balancer does. Manager 2 is killed after the first 100.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(HashSet::new()));
    // What the refused attempts were answered, for the failure message.
    let refused = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        String,
        usize,
    >::new()));
    let send_all = |range: std::ops::Range<usize>| {
        let (acked, refused, client, corp, bases) = (
            acked.clone(),
            refused.clone(),
            client.clone(),
            corp.clone(),
            bases.clone(),
        );
        futures_util::stream::iter(range).for_each_concurrent(6, move |i| {
            let (acked, refused, client, corp, bases) = (
                acked.clone(),
                refused.clone(),
                client.clone(),
                corp.clone(),
                bases.clone(),
            );
            async move {
                let token = format!("T{i:04}");
                let (query, body) =
                    corp.seal(&corp.kf_event_xml(&format!("wkc{}", i % 10), &token));
                for attempt in 0..30 {
                    let base = &bases[(i + attempt) % 3];
                    let sent = client
                        .post(format!("{base}/callback/{}?{query}", corp.id))
                        .body(body.clone())
                        .send()
                        .await;
                    let outcome = match sent {
                        Ok(r) if r.status() == 200 => {
                            acked.lock().unwrap().insert(token);
                            return;
                        }
                        Ok(r) => format!("HTTP {}", r.status().as_u16()),
                        Err(e) if e.is_timeout() => "timed out".to_owned(),
                        Err(_) => "connection failed".to_owned(),
                    };
                    *refused.lock().unwrap().entry(outcome).or_default() += 1;
                }
            }
        })
    };
    send_all(0..100).await;
    managers[1].kill();
    send_all(100..300).await;
    let acked: HashSet<String> = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        300,
        "refused attempts: {:?}",
        refused.lock().unwrap()
    );

    let mut delivered = Default::default();
    for _ in 0..600 {
        delivered = delivered_tokens(&puppet.received(), &corp);
        if acked.iter().all(|t| delivered.contains_key(t)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let missing = acked.iter().filter(|t| !delivered.contains_key(*t)).count();
    assert_eq!(missing, 0, "acknowledged but not delivered");
    let twice = delivered.values().filter(|&&n| n > 1).count();
    eprintln!("cluster: 300 acknowledged over 3 managers (one killed), {twice} delivered twice");
    assert!(twice <= 64);

    // Token fetches stay single-flight across the surviving managers.
    let live = [bases[0].clone(), bases[2].clone()];
    let answers = futures_util::future::join_all((0..60).map(|i| {
        let url = format!(
            "{}/puppetWxkfManager/getToken?corpid=ww1&corpsecret=cluster",
            live[i % 2]
        );
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    }))
    .await;
    assert!(answers.iter().all(|a| a["access_token"] == "TOKEN-1"));
    assert_eq!(wecom.calls("/cgi-bin/gettoken").len(), 1);
}
