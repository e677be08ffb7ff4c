//! Official Accounts and Mini Programs as WeChat knows them, and the admin
//! and push requests a test makes for them.

use reqwest::Method;
use serde_json::{json, Value};
use wxkf_manager::wecom::{encrypt, sign, EncodingAesKey};

use super::{random_string, text, TestApp};

/// An Official Account or Mini Program as WeChat knows it.
pub struct WxApp {
    pub id: String,
    pub token: String,
    pub key: String,
}

impl WxApp {
    pub fn new() -> Self {
        Self {
            id: format!("wx{}", random_string(16).to_lowercase()),
            token: random_string(32),
            key: random_string(43),
        }
    }

    /// The PUT body for this app, of `kind`.
    pub fn app_body(&self, kind: &str) -> Value {
        self.body(kind, json!({}))
    }

    pub fn body(&self, kind: &str, extra: Value) -> Value {
        let mut body = json!({"kind": kind, "token": self.token, "encodingAESKey": self.key});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    }

    /// The plaintext-mode query: `signature` over (token, timestamp, nonce).
    pub fn plain_query(&self) -> String {
        let (ts, nonce) = ("1700000000", random_string(8));
        let signature = sign(&self.token, ts, &nonce, "");
        format!("signature={signature}&timestamp={ts}&nonce={nonce}&openid=o_user")
    }

    /// Safe or compatible mode: (query, `Encrypt`), receiveid = `receive_id`.
    pub fn sealed(&self, inner: &str, receive_id: &str) -> (String, String) {
        let key = EncodingAesKey::parse(&self.key).unwrap();
        let encrypted = encrypt(&key, inner.as_bytes(), receive_id);
        let (ts, nonce) = ("1700000000", random_string(8));
        let msg_signature = sign(&self.token, ts, &nonce, &encrypted);
        let plain_signature = sign(&self.token, ts, &nonce, "");
        (
            format!(
                "signature={plain_signature}&timestamp={ts}&nonce={nonce}&openid=o_user\
                 &encrypt_type=aes&msg_signature={msg_signature}"
            ),
            encrypted,
        )
    }

    pub fn safe_xml(&self, inner: &str) -> (String, String) {
        let (query, encrypted) = self.sealed(inner, &self.id);
        (
            query,
            format!("<xml><ToUserName><![CDATA[gh_test]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"),
        )
    }
}

pub fn follow_xml(user: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_test]]></ToUserName><FromUserName><![CDATA[{user}]]></FromUserName>\
         <CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[]]></EventKey></xml>"
    )
}

impl TestApp {
    pub async fn push(
        &self,
        app: &str,
        query: &str,
        content_type: &str,
        body: String,
    ) -> (u16, String) {
        let resp = self
            .api
            .post(format!("{}/wechat/{app}?{query}", self.address))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        text(resp).await
    }

    pub async fn put_app(&self, app: &WxApp, kind: &str, extra: Value) -> Value {
        let resp = self
            .admin(Method::PUT, &format!("/apps/{}", app.id))
            .json(&app.body(kind, extra))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "PUT app");
        resp.json().await.unwrap()
    }

    /// Create a subscription; returns (id, secret).
    pub async fn subscribe(&self, source: &str, endpoint: &str, filter: Value) -> (String, String) {
        let resp = self
            .admin(Method::POST, "/subscriptions")
            .json(&json!({"source": source, "endpoint": endpoint, "filter": filter}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "create subscription");
        let body: Value = resp.json().await.unwrap();
        (
            body["id"].as_str().unwrap().to_owned(),
            body["secret"].as_str().unwrap().to_owned(),
        )
    }
}
