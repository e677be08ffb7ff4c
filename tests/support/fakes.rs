//! In-test HTTP servers standing in for puppets and for WeCom.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use wxkf_manager::delivery::HostResolver;

/// One request a fake received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub delivery_id: String,
    pub attempt: u32,
    /// Every header, names in lower case.
    pub headers: std::collections::HashMap<String, String>,
    /// When it arrived.
    pub at: std::time::Instant,
    pub body: Vec<u8>,
}

/// What a fake received, for fakes of other modules.
pub fn received(req: &HttpRequest, body: &[u8]) -> Received {
    Received::from(req, body)
}

impl Received {
    fn from(req: &HttpRequest, body: &[u8]) -> Self {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        Self {
            method: req.method().to_string(),
            path: req.path().to_owned(),
            query: req.query_string().to_owned(),
            content_type: header("content-type"),
            delivery_id: header("x-wxkf-delivery-id"),
            attempt: header("x-wxkf-attempt").parse().unwrap_or(0),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            at: std::time::Instant::now(),
            body: body.to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

#[derive(Default)]
struct PuppetBehaviour {
    /// Statuses to answer with, in order; 200 once exhausted.
    statuses: VecDeque<u16>,
    delay: Duration,
}

/// A puppet endpoint that records every delivery.
#[derive(Clone)]
pub struct FakePuppet {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    answered: Arc<Mutex<usize>>,
    behaviour: Arc<Mutex<PuppetBehaviour>>,
}

impl FakePuppet {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let answered = Arc::new(Mutex::new(0));
        let behaviour = Arc::new(Mutex::new(PuppetBehaviour::default()));
        let (r, a, b) = (received.clone(), answered.clone(), behaviour.clone());
        let server = HttpServer::new(move || {
            let (r, a, b) = (r.clone(), a.clone(), b.clone());
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (r, a, b) = (r.clone(), a.clone(), b.clone());
                async move {
                    r.lock().unwrap().push(Received::from(&req, &body));
                    let (status, delay) = {
                        let mut b = b.lock().unwrap();
                        (b.statuses.pop_front().unwrap_or(200), b.delay)
                    };
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    *a.lock().unwrap() += 1;
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
                        .body("ok")
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        Self {
            url: format!("http://127.0.0.1:{port}"),
            received,
            answered,
            behaviour,
        }
    }

    pub fn fail_with(&self, statuses: &[u16]) {
        self.behaviour.lock().unwrap().statuses = statuses.iter().copied().collect();
    }

    pub fn delay(&self, delay: Duration) {
        self.behaviour.lock().unwrap().delay = delay;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn answered(&self) -> usize {
        *self.answered.lock().unwrap()
    }

    /// Wait (bounded) until at least `n` requests arrived; returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..1000 {
            if self.received.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.received()
    }
}

/// A fake WeCom API: `gettoken` hands out numbered tokens; every other path
/// echoes what it got as JSON. Records every call.
#[derive(Clone)]
pub struct FakeWecom {
    pub base: String,
    calls: Arc<Mutex<Vec<Received>>>,
}

impl FakeWecom {
    pub async fn start() -> Self {
        let calls = Arc::new(Mutex::new(Vec::<Received>::new()));
        let c = calls.clone();
        let server = HttpServer::new(move || {
            let c = c.clone();
            App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let c = c.clone();
                async move {
                    let received = Received::from(&req, &body);
                    let n = {
                        let mut calls = c.lock().unwrap();
                        calls.push(received.clone());
                        calls.iter().filter(|r| r.path == received.path).count()
                    };
                    if received.path.ends_with("/reject") {
                        return HttpResponse::Ok().json(serde_json::json!({"errcode": 42001, "errmsg": "access_token expired"}));
                    }
                    if received.path == "/cgi-bin/stable_token" {
                        let asked: serde_json::Value = serde_json::from_slice(&received.body).unwrap_or_default();
                        if asked["secret"] == "bad" {
                            return HttpResponse::Ok().json(serde_json::json!({"errcode": 40125, "errmsg": "invalid appsecret"}));
                        }
                        return HttpResponse::Ok().json(serde_json::json!({
                            "access_token": format!("STABLE-{n}"), "expires_in": 7200
                        }));
                    }
                    // WeChat refusing a token: the first one always (`stale-first`), or any (`always-stale`).
                    let stale = (received.path.ends_with("/stale-first") && received.query.contains("access_token=STABLE-1"))
                        || received.path.ends_with("/always-stale");
                    if stale {
                        return HttpResponse::Ok().json(serde_json::json!({"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}));
                    }
                    if received.path == "/cgi-bin/gettoken" {
                        if received.query.contains("corpsecret=bad") {
                            return HttpResponse::Ok().json(serde_json::json!({"errcode": 40001, "errmsg": "invalid credential"}));
                        }
                        return HttpResponse::Ok().json(serde_json::json!({
                            "errcode": 0, "errmsg": "ok", "access_token": format!("TOKEN-{n}"), "expires_in": 7200
                        }));
                    }
                    HttpResponse::Ok().json(serde_json::json!({
                        "errcode": 0,
                        "method": received.method,
                        "path": received.path,
                        "query": received.query,
                        "content_type": received.content_type,
                        "body": String::from_utf8_lossy(&received.body),
                    }))
                }
            }))
        })
        .workers(1)
        .bind(("127.0.0.1", 0))
        .unwrap();
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        Self {
            base: format!("http://127.0.0.1:{port}"),
            calls,
        }
    }

    pub fn calls(&self, path: &str) -> Vec<Received> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

/// A resolver the test controls: names map to the addresses set last.
#[derive(Default)]
pub struct FakeDns(std::sync::Mutex<std::collections::HashMap<String, Vec<std::net::IpAddr>>>);

impl FakeDns {
    pub fn set(&self, name: &str, address: &str) {
        self.0
            .lock()
            .unwrap()
            .insert(name.to_owned(), vec![address.parse().unwrap()]);
    }
}

impl HostResolver for FakeDns {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
    ) -> futures_util::future::BoxFuture<'a, std::io::Result<Vec<std::net::IpAddr>>> {
        let found = self.0.lock().unwrap().get(host).cloned();
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        })
    }
}
