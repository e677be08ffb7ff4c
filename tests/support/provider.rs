//! A fake WeCom for a service provider: it hands out suite tokens only for
//! a ticket it issued, exchanges each authorization code once, and gives a
//! corp token only for the corp's current permanent code, as WeCom does. A
//! test acts as WeCom's pushes with `TestSuite`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::{random_string, url_escape, Corp, Received, TestApp};

#[derive(Default)]
struct State {
    /// Tickets WeCom pushed (only these open a suite token).
    tickets: HashSet<String>,
    /// Authorization code → (corp, name); removed once exchanged.
    codes: HashMap<String, (String, String)>,
    /// Corp → its current permanent code.
    permanent: HashMap<String, String>,
    suite_tokens: HashSet<String>,
    /// Access tokens the API refuses (42001) when a proxied call carries them.
    refused: HashSet<String>,
    served: u64,
    exchange_delay: Duration,
    calls: Vec<Received>,
}

#[derive(Clone)]
pub struct FakeProviderApi {
    pub base: String,
    state: Arc<Mutex<State>>,
}

fn refuse(errcode: i64, errmsg: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({"errcode": errcode, "errmsg": errmsg}))
}

impl FakeProviderApi {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        let server = HttpServer::new(move || {
            let s = s.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let s = s.clone();
                async move { answer(&s, &req, &body).await }
            }))
        })
        .workers(2)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        Self {
            base: format!("http://127.0.0.1:{port}"),
            state,
        }
    }

    /// WeCom issues a ticket (the test then pushes it).
    pub fn issue_ticket(&self) -> String {
        let ticket = format!("TICKET-{}", random_string(16));
        self.state.lock().unwrap().tickets.insert(ticket.clone());
        ticket
    }

    /// A corp installs the suite: the code WeCom pushes in `create_auth`.
    pub fn issue_code(&self, corp: &str, name: &str) -> String {
        let code = format!("AUTHCODE-{}", random_string(16));
        self.state
            .lock()
            .unwrap()
            .codes
            .insert(code.clone(), (corp.to_owned(), name.to_owned()));
        code
    }

    /// Exchanges take this long from now on.
    pub fn slow_exchanges(&self, delay: Duration) {
        self.state.lock().unwrap().exchange_delay = delay;
    }

    /// From now on a proxied call with this access token gets 42001.
    pub fn refuse_token(&self, token: &str) {
        self.state.lock().unwrap().refused.insert(token.to_owned());
    }

    pub fn permanent_code(&self, corp: &str) -> Option<String> {
        self.state.lock().unwrap().permanent.get(corp).cloned()
    }

    pub fn calls(&self, path: &str) -> Vec<Received> {
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

async fn answer(state: &Mutex<State>, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let received = super::fakes::received(req, body);
    let asked: Value = serde_json::from_slice(body).unwrap_or_default();
    let query_token = |name: &str| {
        received
            .query
            .split('&')
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .unwrap_or("")
            .to_owned()
    };
    let delay = {
        let mut s = state.lock().unwrap();
        s.calls.push(received.clone());
        s.served += 1;
        s.exchange_delay
    };
    match received.path.as_str() {
        "/cgi-bin/service/get_suite_token" => {
            let mut s = state.lock().unwrap();
            if !s
                .tickets
                .contains(asked["suite_ticket"].as_str().unwrap_or(""))
            {
                return refuse(40085, "invalid suite_ticket");
            }
            let token = format!("SUITE-TOKEN-{}", s.served);
            s.suite_tokens.insert(token.clone());
            HttpResponse::Ok().json(json!({"errcode": 0, "errmsg": "ok", "suite_access_token": token, "expires_in": 7200}))
        }
        "/cgi-bin/service/v2/get_permanent_code" => {
            if !state
                .lock()
                .unwrap()
                .suite_tokens
                .contains(&query_token("suite_access_token"))
            {
                return refuse(42009, "suite_access_token expired");
            }
            tokio::time::sleep(delay).await;
            let mut s = state.lock().unwrap();
            let Some((corp, name)) = s.codes.remove(asked["auth_code"].as_str().unwrap_or(""))
            else {
                return refuse(40078, "invalid auth_code");
            };
            let permanent = format!("PERMANENT-{}", random_string(20));
            s.permanent.insert(corp.clone(), permanent.clone());
            HttpResponse::Ok().json(json!({
                "errcode": 0, "errmsg": "ok", "permanent_code": permanent,
                "auth_corp_info": {"corpid": corp, "corp_name": name}, "state": ""
            }))
        }
        "/cgi-bin/service/get_corp_token" => {
            let mut s = state.lock().unwrap();
            if !s.suite_tokens.contains(&query_token("suite_access_token")) {
                return refuse(42009, "suite_access_token expired");
            }
            let corp = asked["auth_corpid"].as_str().unwrap_or("");
            if s.permanent.get(corp).map(String::as_str) != asked["permanent_code"].as_str() {
                return refuse(40084, "invalid permanent_code");
            }
            let token = format!("CORP-TOKEN-{corp}-{}", s.served);
            s.served += 1;
            HttpResponse::Ok().json(
                json!({"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": 7200}),
            )
        }
        _ => {
            if state
                .lock()
                .unwrap()
                .refused
                .contains(&query_token("access_token"))
            {
                return refuse(42001, "access_token expired");
            }
            HttpResponse::Ok().json(json!({
                "errcode": 0, "path": received.path, "query": received.query,
                "body": String::from_utf8_lossy(&received.body),
            }))
        }
    }
}

/// A suite as WeCom knows it: its own credentials, like a corp's, and the
/// provider's corp (the receiveid of URL checks).
pub struct TestSuite {
    pub id: String,
    pub provider_corp: String,
    pub creds: Corp,
    pub secret: String,
}

impl TestSuite {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            provider_corp: format!("wwprovider{}", random_string(6)),
            creds: Corp::new(id),
            secret: format!("suite-secret-{}", random_string(16)),
        }
    }

    pub fn body(&self) -> Value {
        json!({
            "providerCorpId": self.provider_corp, "token": self.creds.token,
            "encodingAESKey": self.creds.key, "suiteSecret": self.secret, "name": "Test suite",
        })
    }

    pub async fn register(&self, app: &TestApp) {
        let resp = app
            .admin(reqwest::Method::PUT, &format!("/suites/{}", self.id))
            .json(&self.body())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    /// A key of the suite, for downstream systems and puppets.
    pub async fn issue_key(&self, app: &TestApp) -> String {
        let resp = app
            .admin(reqwest::Method::POST, &format!("/suites/{}/keys", self.id))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        resp.json::<Value>().await.unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// A command push's decrypted XML.
    pub fn command_xml(&self, info_type: &str, fields: &[(&str, &str)]) -> String {
        let mut xml = format!(
            "<xml><SuiteId><![CDATA[{}]]></SuiteId><InfoType><![CDATA[{info_type}]]></InfoType>",
            self.id
        );
        for (name, value) in fields {
            xml.push_str(&format!("<{name}><![CDATA[{value}]]></{name}>"));
        }
        xml.push_str("</xml>");
        xml
    }

    /// POST a command push as WeCom does (sealed for the suite id).
    pub async fn push_command(&self, app: &TestApp, xml: &str) -> reqwest::Response {
        let (query, body) = self.creds.seal_for(xml, &self.id);
        self.post(app, &format!("/suite/{}/command?{query}", self.id), body)
            .await
    }

    pub async fn push_ticket(&self, app: &TestApp, ticket: &str, issued: i64) -> reqwest::Response {
        let xml = self.command_xml(
            "suite_ticket",
            &[("TimeStamp", &issued.to_string()), ("SuiteTicket", ticket)],
        );
        self.push_command(app, &xml).await
    }

    pub async fn push_create_auth(&self, app: &TestApp, code: &str) -> reqwest::Response {
        let xml = self.command_xml(
            "create_auth",
            &[
                ("AuthCode", code),
                ("TimeStamp", "1700000000"),
                ("State", ""),
            ],
        );
        self.push_command(app, &xml).await
    }

    /// POST a customer corp's callback to the data URL (sealed for the corp).
    pub async fn push_data(
        &self,
        app: &TestApp,
        corp: &str,
        xml: &str,
        url_corp: Option<&str>,
    ) -> reqwest::Response {
        let (query, body) = self.creds.seal_for(xml, corp);
        let path = match url_corp {
            Some(c) => format!("/suite/{}/data/{c}?{query}", self.id),
            None => format!("/suite/{}/data?{query}", self.id),
        };
        self.post(app, &path, body).await
    }

    pub async fn post(
        &self,
        app: &TestApp,
        path_and_query: &str,
        body: String,
    ) -> reqwest::Response {
        app.api
            .post(format!("{}{path_and_query}", app.address))
            .header("content-type", "text/xml")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// A URL check on `path`, with `echo` sealed for `receive_id`.
    pub fn check_query(&self, echo: &str, receive_id: &str) -> String {
        let key = wxkf_manager::wecom::EncodingAesKey::parse(&self.creds.key).unwrap();
        let echostr = wxkf_manager::wecom::encrypt(&key, echo.as_bytes(), receive_id);
        let sig = wxkf_manager::wecom::sign(&self.creds.token, "1700000000", "123", &echostr);
        format!(
            "msg_signature={sig}&timestamp=1700000000&nonce=123&echostr={}",
            url_escape(&echostr)
        )
    }

    /// The corp a customer-service puppet of this suite registers as: the
    /// suite's token and key, and a key of the suite as its corpSecret.
    pub fn customer(&self, corp: &str, suite_key: &str) -> Corp {
        Corp {
            id: corp.to_owned(),
            token: self.creds.token.clone(),
            key: self.creds.key.clone(),
            secret: suite_key.to_owned(),
        }
    }
}
