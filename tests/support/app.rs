//! `spawn_app`: the real application on port 0 with a throwaway store, a fake
//! WeCom, and typed helpers to act as WeCom, a gateway or a puppet.

use std::sync::Arc;
use std::time::Duration;

use rand::distr::{Alphanumeric, SampleString};
use wxkf_manager::clock::Clock;
use wxkf_manager::config::Config;
use wxkf_manager::delivery::SystemResolver;
use wxkf_manager::startup::{Application, Seams};
use wxkf_manager::wecom::{build_envelope, encrypt, sign, EncodingAesKey};

use super::{test_mongo_uri, FakeWecom, ManualClock};

pub fn random_string(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A corp's callback credentials, as WeCom and its puppets know them.
#[derive(Clone, Debug)]
pub struct Corp {
    pub id: String,
    pub token: String,
    pub key: String,
    pub secret: String,
}

impl Corp {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            token: random_string(32),
            key: random_string(43),
            secret: format!("secret-{}", random_string(20)),
        }
    }

    /// Same corp, another app: other token and key.
    pub fn another_app(&self) -> Self {
        Self {
            id: self.id.clone(),
            ..Self::new(&self.id)
        }
    }

    pub fn kf_event_xml(&self, kf: &str, token: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[{}]]></ToUserName><CreateTime>1700000000</CreateTime>\
             <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>\
             <Token><![CDATA[{token}]]></Token><OpenKfId><![CDATA[{kf}]]></OpenKfId></xml>",
            self.id
        )
    }

    /// What WeCom POSTs: (query string, envelope XML), receiveid = `receive_id`.
    pub fn seal_for(&self, inner: &str, receive_id: &str) -> (String, String) {
        let key = EncodingAesKey::parse(&self.key).unwrap();
        let encrypted = encrypt(&key, inner.as_bytes(), receive_id);
        let (ts, nonce) = ("1700000000", random_string(10));
        let sig = sign(&self.token, ts, &nonce, &encrypted);
        (
            format!("msg_signature={sig}&timestamp={ts}&nonce={nonce}"),
            build_envelope(receive_id, "1000002", &encrypted),
        )
    }

    /// The sync token of a kf event this corp's credentials sealed.
    pub fn token_in(&self, body: &[u8]) -> String {
        use wxkf_manager::wecom::{decrypt, parse_envelope, parse_message, EncodingAesKey};
        let key = EncodingAesKey::parse(&self.key).unwrap();
        let envelope = parse_envelope(body).unwrap();
        let plain = decrypt(&key, &envelope.encrypt, &self.id).unwrap();
        parse_message(&plain.message).unwrap().token.unwrap()
    }

    /// The sync tokens of delivered requests, in the order they arrived.
    pub fn tokens_in(&self, received: &[super::Received]) -> Vec<String> {
        received.iter().map(|r| self.token_in(&r.body)).collect()
    }

    pub fn seal(&self, inner: &str) -> (String, String) {
        self.seal_for(inner, &self.id)
    }

    /// A URL-verification query for `echo`.
    pub fn verify_query(&self, echo: &str) -> String {
        let key = EncodingAesKey::parse(&self.key).unwrap();
        let echostr = encrypt(&key, echo.as_bytes(), &self.id);
        let sig = sign(&self.token, "1700000000", "123", &echostr);
        let escaped: String = url_escape(&echostr);
        format!("msg_signature={sig}&timestamp=1700000000&nonce=123&echostr={escaped}")
    }
}

pub fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub struct TestApp {
    pub address: String,
    pub api: reqwest::Client,
    pub wecom: FakeWecom,
    pub handle: actix_web::dev::ServerHandle,
    running: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    config: Config,
    seams: Seams,
    data_dir: Arc<tempfile::TempDir>,
    dispatcher: Arc<wxkf_manager::delivery::Dispatcher>,
}

/// The admin token every test app is started with (see `TestApp::admin`).
pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789";

pub fn test_config(data_dir: &std::path::Path, wecom: &FakeWecom) -> Config {
    let mut config = Config::defaults();
    config.admin_token = Some(wxkf_manager::domain::Secret::new(ADMIN_TOKEN));
    config.host = [127, 0, 0, 1].into();
    config.port = 0;
    config.data_dir = data_dir.to_path_buf();
    config.mongo_uri = test_mongo_uri().map(wxkf_manager::domain::Secret::new);
    config.wecom_api_base = wecom.base.clone();
    config.wechat_api_base = wecom.base.clone();
    config.access_token_url = format!("{}/cgi-bin/gettoken", wecom.base);
    config.delivery.attempt_timeout = Duration::from_secs(2);
    config.delivery.retry_base = Duration::from_millis(50);
    config.delivery.retry_cap = Duration::from_millis(200);
    config.delivery.poll_interval = Duration::from_millis(100);
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with_seams(Seams::default(), adjust).await
}

/// Start the app with its own clock and name resolver.
pub async fn spawn_app_with_seams(seams: Seams, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let wecom = FakeWecom::start().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(data_dir.path(), &wecom);
    adjust(&mut config);
    launch(config, wecom, Arc::new(data_dir), seams).await
}

/// An app whose deliveries happen only in `step` / `drain`, on a clock the
/// test moves: delivery tests without sleeps.
pub async fn spawn_stepped_app(
    clock: Arc<ManualClock>,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let seams = Seams {
        clock,
        manual_delivery: true,
        ..Seams::default()
    };
    spawn_app_with_seams(seams, adjust).await
}

pub async fn spawn_app_with_clock(
    clock: Arc<dyn Clock>,
    adjust: impl FnOnce(&mut Config),
) -> TestApp {
    let seams = Seams {
        clock,
        resolver: Arc::new(SystemResolver),
        ..Seams::default()
    };
    spawn_app_with_seams(seams, adjust).await
}

/// Two managers on one fresh MongoDB database (a test that needs MongoDB):
/// the first as a `TestApp`, the second running beside it, with its base
/// URL and its server task (abort it at the end).
pub async fn spawn_two_on_mongo() -> (
    TestApp,
    String,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let uri = super::require_mongo();
    let first =
        spawn_app_with(|c| c.mongo_uri = Some(wxkf_manager::domain::Secret::new(uri))).await;
    let second = first.build_on_same_store(|c| c.port = 0).await.unwrap();
    let second_base = format!("http://127.0.0.1:{}", second.port());
    let server = tokio::spawn(second.run_until_stopped());
    (first, second_base, server)
}

async fn launch(
    config: Config,
    wecom: FakeWecom,
    data_dir: Arc<tempfile::TempDir>,
    seams: Seams,
) -> TestApp {
    let app = Application::build_with(config.clone(), seams.clone())
        .await
        .expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let handle = app.handle();
    let dispatcher = app.dispatcher();
    let running = Some(tokio::spawn(app.run_until_stopped()));
    TestApp {
        address,
        api: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        wecom,
        handle,
        running,
        config,
        seams,
        data_dir,
        dispatcher,
    }
}

impl TestApp {
    /// Graceful stop, as on SIGTERM: returns when in-flight deliveries ended.
    pub async fn stop(&mut self) {
        self.handle.stop(true).await;
        if let Some(running) = self.running.take() {
            running.await.unwrap().unwrap();
        }
    }

    /// One delivery round by hand (an app started with `manual_delivery`).
    pub async fn step(&self) -> wxkf_manager::delivery::Step {
        self.dispatcher.step().await
    }

    /// Step until a round finds nothing due: everything that could go now
    /// has gone, and what it came to is recorded.
    pub async fn drain(&self) -> usize {
        let mut taken = 0;
        for _ in 0..100 {
            let step = self.step().await;
            // Nothing else claims here, so every outcome must be recorded.
            assert_eq!(step.recorded, step.taken, "outcomes not recorded");
            // A claim the store did not answer is tried again: stopping there
            // would leave due deliveries behind and look like a fault.
            match (step.taken, step.claim_failed) {
                (0, false) => return taken,
                (n, _) => taken += n,
            }
        }
        panic!("still delivering after 100 rounds");
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Run the `wxkf-manager` binary against this app's store.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_with_env(args, &[])
    }

    /// The same, with more environment (secrets the CLI reads from there).
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wxkf-manager"));
        cmd.env_clear()
            .env("DATA_DIR", &self.config.data_dir)
            .envs(env.iter().copied())
            .args(args);
        if let Some(uri) = &self.config.mongo_uri {
            cmd.env("MONGO_URI", uri.expose());
        }
        cmd.output().expect("run the CLI")
    }

    /// Everything the store holds, as text (to look for secrets in clear).
    pub async fn raw_store_dump(&self) -> String {
        if let Some(uri) = &self.config.mongo_uri {
            let client = mongodb::Client::with_uri_str(uri.expose()).await.unwrap();
            let db = client.default_database().unwrap();
            let mut out = String::new();
            for name in db.list_collection_names().await.unwrap() {
                let mut cursor = db
                    .collection::<mongodb::bson::Document>(&name)
                    .find(mongodb::bson::doc! {})
                    .await
                    .unwrap();
                while cursor.advance().await.unwrap() {
                    out.push_str(&format!("{:?}\n", cursor.deserialize_current().unwrap()));
                }
            }
            return out;
        }
        let mut out = String::new();
        for entry in std::fs::read_dir(&self.config.data_dir).unwrap() {
            if let Ok(bytes) = std::fs::read(entry.unwrap().path()) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        out
    }

    /// Build (not run) another manager on this store with changed settings.
    pub async fn build_on_same_store(
        &self,
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Application> {
        let mut config = self.config.clone();
        adjust(&mut config);
        Application::build(config).await
    }

    /// Stop, then start a new manager on the same store.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        launch(
            self.config.clone(),
            self.wecom.clone(),
            self.data_dir.clone(),
            self.seams.clone(),
        )
        .await
    }

    pub async fn register(&self, corp: &Corp, kf: &str, endpoint: &str) -> reqwest::Response {
        self.api
            .post(format!("{}/puppetWxkfManager/register", self.address))
            .json(&serde_json::json!({
                "kfId": kf, "kfName": format!("name of {kf}"), "endpoint": endpoint,
                "corpId": corp.id, "corpSecret": corp.secret, "token": corp.token, "encodingAESKey": corp.key,
            }))
            .send()
            .await
            .unwrap()
    }

    pub async fn register_ok(&self, corp: &Corp, kf: &str, endpoint: &str) {
        let resp = self.register(corp, kf, endpoint).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    pub async fn deregister(&self, corp: &Corp, kf: &str) -> reqwest::Response {
        self.api
            .post(format!("{}/puppetWxkfManager/deregister", self.address))
            .json(&serde_json::json!({"kfId": kf, "corpId": corp.id, "kfName": "ignored"}))
            .send()
            .await
            .unwrap()
    }

    pub async fn post_raw(
        &self,
        corp_id: &str,
        query: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.api
            .post(format!("{}/callback/{corp_id}?{query}", self.address))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Send a signed, encrypted `kf_msg_or_event` as WeCom would.
    pub async fn post_kf_event(&self, corp: &Corp, kf: &str, token: &str) -> reqwest::Response {
        let (query, body) = corp.seal(&corp.kf_event_xml(kf, token));
        self.post_raw(&corp.id, &query, body).await
    }

    pub async fn post_decrypted(
        &self,
        corp_id: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.api
            .post(format!("{}/callback/decrypted/{corp_id}", self.address))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `getToken` as a puppet calls it, with the corp's secret.
    pub async fn get_token(&self, corp: &Corp) -> serde_json::Value {
        self.get(&format!(
            "/puppetWxkfManager/getToken?corpid={}&corpsecret={}",
            corp.id, corp.secret
        ))
        .await
        .json()
        .await
        .unwrap()
    }

    /// A request to `/admin/api{path}` with the test admin token.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.api
            .request(method, format!("{}/admin/api{path}", self.address))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// GET `/admin/api{path}` with the test admin token, as JSON.
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let resp = self.admin(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET /admin/api{path}");
        resp.json().await.unwrap()
    }

    /// The deliveries of a kfId, as the admin API lists them.
    pub async fn deliveries_of(&self, kf: &str) -> Vec<serde_json::Value> {
        self.admin_json(&format!("/deliveries?kfId={kf}&limit=500"))
            .await["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The OpenAPI document the app serves.
    pub async fn openapi(&self) -> serde_json::Value {
        self.get("/admin/api/openapi.json")
            .await
            .json()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.api
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .unwrap()
    }
}

pub async fn text(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}
