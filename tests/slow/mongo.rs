//! MongoDB-only behaviour: the old manager's documents, and an outage of the
//! database in the middle of traffic.

use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, DateTime};

use crate::support::{require_mongo, FakePuppet, OwnMongo};
use crate::support::{spawn_app_with, text, Corp, TestApp};

async fn app_on(uri: &str) -> TestApp {
    let uri = uri.to_owned();
    spawn_app_with(move |c| c.mongo_uri = Some(wxkf_manager::domain::Secret::new(uri))).await
}

#[tokio::test]
#[ignore = "needs MongoDB: scripts/test runs it (MONGO_URI, --include-ignored)"]
async fn registrations_of_the_old_manager_route_callbacks() {
    let uri = require_mongo();
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwlegacy");
    // Exactly what the old Node.js manager (Mongoose model WxkfPuppet) wrote.
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let db = client.default_database().unwrap();
    db.collection("wxkfpuppets")
        .insert_one(doc! {
            "_id": ObjectId::new(),
            "botEndpoint": &puppet.url,
            "name": "legacy account",
            "kfOpenId": "wklegacy",
            "corpId": &corp.id,
            "corpSecret": &corp.secret,
            "token": &corp.token,
            "encodingAESKey": &corp.key,
            "online": true,
            "lastOnlineDate": DateTime::from_millis(1_700_000_000_000),
            "__v": 0,
        })
        .await
        .unwrap();

    let app = app_on(&uri).await;
    assert_eq!(
        text(app.post_kf_event(&corp, "wklegacy", "T").await).await,
        (200, "success".into())
    );
    let got = puppet.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/callback");

    let info: serde_json::Value = app
        .get("/puppetWxkfManager/puppetWxkfInfo/wklegacy")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(info["name"], "legacy account");
    assert_eq!(info["lastOnlineDate"], "2023-11-14T22:13:20.000Z");
    // Registering again keeps the old document shape (one document per kfOpenId).
    app.register_ok(&corp, "wklegacy", &puppet.url).await;
    let docs = db
        .collection::<mongodb::bson::Document>("wxkfpuppets")
        .count_documents(doc! {"kfOpenId": "wklegacy"})
        .await
        .unwrap();
    assert_eq!(docs, 1);
}

#[tokio::test]
#[ignore = "needs MongoDB: scripts/test runs it (MONGO_URI, --include-ignored)"]
async fn a_database_outage_is_503_and_recovers_without_a_restart() {
    let port = crate::support::free_port();
    let db = OwnMongo::start(port, tempfile::tempdir().unwrap()).await;
    let app = app_on(&format!("mongodb://127.0.0.1:{port}/outage")).await;
    let puppet = FakePuppet::start().await;
    let corp = Corp::new("wwoutage");
    app.register_ok(&corp, "wkoutage", &puppet.url).await;
    assert_eq!(
        app.post_kf_event(&corp, "wkoutage", "before")
            .await
            .status(),
        200
    );
    assert_eq!(puppet.wait_for(1).await.len(), 1);

    let (port, dir) = db.kill();
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert_eq!(
        app.post_kf_event(&corp, "wkoutage", "during")
            .await
            .status(),
        503
    );
    assert_eq!(app.get("/healthz").await.status(), 200);

    let db = OwnMongo::start(port, dir).await;
    let mut ready = false;
    for _ in 0..100 {
        if app.get("/readyz").await.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ready, "readyz recovers once MongoDB is back");
    assert_eq!(
        app.post_kf_event(&corp, "wkoutage", "after").await.status(),
        200
    );
    let got = puppet.wait_for(2).await;
    assert_eq!(
        got.len(),
        2,
        "the callback sent after recovery is delivered"
    );
    let _ = db.kill();
}
