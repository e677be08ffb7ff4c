//! A fake WeChat Open Platform for a component: it gives a component token
//! only for a verify ticket it issued, exchanges each authorization code
//! once, and refreshes an account's token only with its current refresh
//! token, handing out a new one each time (an old one is refused), as the
//! contract describes WeChat. A test acts as WeChat's pushes with
//! `TestComponent`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::{random_string, url_escape, Received, TestApp};

#[derive(Default)]
struct State {
    tickets: HashSet<String>,
    component_tokens: HashSet<String>,
    /// Authorization code → account; removed once exchanged.
    codes: HashMap<String, String>,
    /// Account → its current refresh token (ordered, for the paged list).
    refresh: BTreeMap<String, String>,
    /// Access tokens the API refuses (40001) when a proxied call carries them.
    refused: HashSet<String>,
    served: u64,
    exchange_delay: Duration,
    calls: Vec<Received>,
}

#[derive(Clone)]
pub struct FakeOpenPlatform {
    pub base: String,
    state: Arc<Mutex<State>>,
}

fn refuse(errcode: i64, errmsg: &str) -> HttpResponse {
    HttpResponse::Ok().json(json!({"errcode": errcode, "errmsg": errmsg}))
}

impl FakeOpenPlatform {
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

    /// WeChat issues a verify ticket (the test then pushes it).
    pub fn issue_ticket(&self) -> String {
        let ticket = format!("ticket@@@{}", random_string(24));
        self.state.lock().unwrap().tickets.insert(ticket.clone());
        ticket
    }

    /// An account authorizes the component: the code WeChat pushes.
    pub fn issue_code(&self, account: &str) -> String {
        let code = format!("queryauthcode@@@{}", random_string(20));
        self.state
            .lock()
            .unwrap()
            .codes
            .insert(code.clone(), account.to_owned());
        code
    }

    /// An account authorized while no manager heard of it (the push was
    /// lost): only WeChat's list knows its refresh token.
    pub fn authorize_silently(&self, account: &str) {
        let token = format!("refreshtoken@@@{}", random_string(20));
        self.state
            .lock()
            .unwrap()
            .refresh
            .insert(account.to_owned(), token);
    }

    /// The refresh token WeChat currently honours for an account.
    pub fn refresh_token(&self, account: &str) -> Option<String> {
        self.state.lock().unwrap().refresh.get(account).cloned()
    }

    /// From now on a proxied call with this access token (or component
    /// token) gets 40001.
    pub fn refuse_token(&self, token: &str) {
        self.state.lock().unwrap().refused.insert(token.to_owned());
    }

    pub fn slow_exchanges(&self, delay: Duration) {
        self.state.lock().unwrap().exchange_delay = delay;
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

fn query_value(query: &str, name: &str) -> String {
    query
        .split('&')
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap_or("")
        .to_owned()
}

async fn answer(state: &Mutex<State>, req: &HttpRequest, body: &[u8]) -> HttpResponse {
    let received = super::fakes::received(req, body);
    let asked: Value = serde_json::from_slice(body).unwrap_or_default();
    let delay = {
        let mut s = state.lock().unwrap();
        s.calls.push(received.clone());
        s.served += 1;
        s.exchange_delay
    };
    let component_token = query_value(&received.query, "component_access_token");
    let valid_component_token = |s: &State| s.component_tokens.contains(&component_token);
    match received.path.as_str() {
        "/cgi-bin/component/api_component_token" => {
            let mut s = state.lock().unwrap();
            let ticket = asked["component_verify_ticket"].as_str().unwrap_or("");
            if !s.tickets.contains(ticket) {
                return refuse(61006, "component ticket is invalid");
            }
            let token = format!("COMPONENT-TOKEN-{}", s.served);
            s.component_tokens.insert(token.clone());
            HttpResponse::Ok().json(json!({"component_access_token": token, "expires_in": 7200}))
        }
        "/cgi-bin/component/api_query_auth" => {
            if !valid_component_token(&state.lock().unwrap()) {
                return refuse(42001, "component_access_token expired");
            }
            tokio::time::sleep(delay).await;
            let mut s = state.lock().unwrap();
            let code = asked["authorization_code"].as_str().unwrap_or("");
            let Some(account) = s.codes.remove(code) else {
                return refuse(61010, "code is expired or invalid");
            };
            let refresh = format!("refreshtoken@@@{}", random_string(20));
            s.refresh.insert(account.clone(), refresh.clone());
            let access = format!("AUTHORIZER-TOKEN-{account}-{}", s.served);
            HttpResponse::Ok().json(json!({"authorization_info": {
                "authorizer_appid": account, "authorizer_access_token": access,
                "expires_in": 7200, "authorizer_refresh_token": refresh,
                "func_info": [{"funcscope_category": {"id": 1}}],
            }}))
        }
        "/cgi-bin/component/api_authorizer_token" => {
            let mut s = state.lock().unwrap();
            if !valid_component_token(&s) {
                return refuse(42001, "component_access_token expired");
            }
            let account = asked["authorizer_appid"].as_str().unwrap_or("").to_owned();
            let presented = asked["authorizer_refresh_token"].as_str().unwrap_or("");
            if s.refresh.get(&account).map(String::as_str) != Some(presented) {
                return refuse(61023, "refresh_token is invalid");
            }
            let refresh = format!("refreshtoken@@@{}", random_string(20));
            s.refresh.insert(account.clone(), refresh.clone());
            let access = format!("AUTHORIZER-TOKEN-{account}-{}", s.served);
            HttpResponse::Ok().json(json!({
                "authorizer_access_token": access, "expires_in": 7200,
                "authorizer_refresh_token": refresh,
            }))
        }
        "/cgi-bin/component/api_get_authorizer_list" => {
            let s = state.lock().unwrap();
            if !valid_component_token(&s) {
                return refuse(42001, "component_access_token expired");
            }
            let offset = asked["offset"].as_u64().unwrap_or(0) as usize;
            let count = asked["count"].as_u64().unwrap_or(0).min(500) as usize;
            let list: Vec<Value> = s
                .refresh
                .iter()
                .skip(offset)
                .take(count)
                .map(|(appid, refresh)| {
                    json!({"authorizer_appid": appid, "refresh_token": refresh, "auth_time": 1_700_000_000})
                })
                .collect();
            HttpResponse::Ok().json(json!({"total_count": s.refresh.len(), "list": list}))
        }
        _ => {
            let access = query_value(&received.query, "access_token");
            let refused = &state.lock().unwrap().refused;
            if refused.contains(&access) || refused.contains(&component_token) {
                return refuse(
                    40001,
                    "invalid credential, access_token is invalid or not latest",
                );
            }
            HttpResponse::Ok().json(json!({
                "errcode": 0, "path": received.path, "query": received.query,
                "body": String::from_utf8_lossy(&received.body),
            }))
        }
    }
}

/// A component as WeChat knows it: one Token and EncodingAESKey for its
/// events and every authorized account's pushes, sealed for its appId.
pub struct TestComponent {
    pub id: String,
    pub token: String,
    pub key: String,
    pub secret: String,
}

impl TestComponent {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            token: format!("tok{}", random_string(8)),
            key: random_string(43),
            secret: format!("component-secret-{}", random_string(16)),
        }
    }

    pub fn body(&self) -> Value {
        json!({"token": self.token, "encodingAESKey": self.key, "appSecret": self.secret,
               "name": "Test component"})
    }

    pub async fn register(&self, app: &TestApp) {
        let resp = app
            .admin(reqwest::Method::PUT, &format!("/components/{}", self.id))
            .json(&self.body())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }

    pub async fn issue_key(&self, app: &TestApp) -> String {
        let resp = app
            .admin(
                reqwest::Method::POST,
                &format!("/components/{}/keys", self.id),
            )
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

    /// An event's decrypted XML.
    pub fn event_xml(&self, info_type: &str, fields: &[(&str, &str)]) -> String {
        let mut xml = format!(
            "<xml><AppId><![CDATA[{}]]></AppId><CreateTime>1700000000</CreateTime>\
             <InfoType><![CDATA[{info_type}]]></InfoType>",
            self.id
        );
        for (name, value) in fields {
            xml.push_str(&format!("<{name}><![CDATA[{value}]]></{name}>"));
        }
        xml.push_str("</xml>");
        xml
    }

    /// Query and envelope of `inner` sealed for `receive_id` in safe mode.
    pub fn seal_for(&self, inner: &str, receive_id: &str, outer_id: &str) -> (String, String) {
        use wxkf_manager::wecom::{encrypt, sign, EncodingAesKey};
        let key = EncodingAesKey::parse(&self.key).unwrap();
        let encrypted = encrypt(&key, inner.as_bytes(), receive_id);
        let (ts, nonce) = ("1700000000", random_string(10));
        let sig = sign(&self.token, ts, &nonce, &encrypted);
        (
            format!(
                "timestamp={ts}&nonce={nonce}&encrypt_type=aes&msg_signature={}",
                url_escape(&sig)
            ),
            format!("<xml><AppId><![CDATA[{outer_id}]]></AppId><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"),
        )
    }

    pub async fn push_event(&self, app: &TestApp, xml: &str) -> reqwest::Response {
        let (query, body) = self.seal_for(xml, &self.id, &self.id);
        self.post(app, &format!("/component/{}/events?{query}", self.id), body)
            .await
    }

    pub async fn push_ticket(
        &self,
        app: &TestApp,
        ticket: &str,
        created: i64,
    ) -> reqwest::Response {
        let xml = format!(
            "<xml><AppId><![CDATA[{}]]></AppId><CreateTime>{created}</CreateTime>\
             <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
             <ComponentVerifyTicket><![CDATA[{ticket}]]></ComponentVerifyTicket></xml>",
            self.id
        );
        self.push_event(app, &xml).await
    }

    pub async fn push_authorized(
        &self,
        app: &TestApp,
        info_type: &str,
        account: &str,
        code: &str,
    ) -> reqwest::Response {
        let xml = self.event_xml(
            info_type,
            &[
                ("AuthorizerAppid", account),
                ("AuthorizationCode", code),
                ("AuthorizationCodeExpiredTime", "1700003600"),
                ("PreAuthCode", "preauthcode@@@x"),
            ],
        );
        self.push_event(app, &xml).await
    }

    /// An authorized account's push to the `$APPID$` message URL.
    pub async fn push_message(&self, app: &TestApp, account: &str, xml: &str) -> reqwest::Response {
        let (query, body) = self.seal_for(xml, &self.id, account);
        self.post(
            app,
            &format!("/component/{}/messages/{account}?{query}", self.id),
            body,
        )
        .await
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
}
