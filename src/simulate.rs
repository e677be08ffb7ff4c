//! `wxkf-manager simulate`: act as WeCom (or a decrypting gateway, WeChat
//! for an Official Account, WeCom for a suite, the Open Platform for a
//! component) against a deployment, before touching a console. Sends the
//! URL checks and signed, encrypted pushes exactly as they would, and
//! reports what came back.

use std::time::{Duration, Instant};

use clap::Args;

use crate::wecom::{build_envelope, encrypt, sign, EncodingAesKey};

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// The manager's base URL, e.g. http://host:7777
    #[arg(long)]
    pub url: String,
    /// The corp to act as WeCom for (with --kf-id); with --suite-id, a
    /// customer corp whose callback goes to the suite's data URL.
    #[arg(long, required_unless_present_any = ["app_id", "suite_id", "component_app_id"])]
    pub corp_id: Option<String>,
    /// Act as WeChat for this Official Account instead: the URL check and a
    /// safe-mode `subscribe` push from --openid to `/wechat/{appId}`.
    #[arg(long, conflicts_with_all = ["corp_id", "kf_id", "decrypted"])]
    pub app_id: Option<String>,
    /// The follower of the simulated `subscribe` push.
    #[arg(long, default_value = "o_simulated_follower")]
    pub openid: String,
    /// The callback Token configured in WeCom.
    #[arg(long)]
    pub token: String,
    /// The EncodingAESKey configured in WeCom (43 characters).
    #[arg(long)]
    pub aes_key: String,
    #[arg(long, required_unless_present_any = ["app_id", "suite_id", "component_app_id"])]
    pub kf_id: Option<String>,
    /// Act as WeCom for this suite instead (§7.1): both URL checks and a
    /// `suite_ticket` stamped as the oldest possible (it never displaces a
    /// real one); with --corp-id and --kf-id also a customer corp's
    /// `kf_msg_or_event` to the data URL.
    #[arg(long, requires = "provider_corp_id", conflicts_with_all = ["app_id", "decrypted"])]
    pub suite_id: Option<String>,
    /// The suite's provider corp (the receiveid of its URL checks).
    #[arg(long)]
    pub provider_corp_id: Option<String>,
    /// Also push `create_auth` with this code (against a real deployment
    /// the manager then asks WeCom to exchange it).
    #[arg(long, requires = "suite_id")]
    pub auth_code: Option<String>,
    /// Act as the Open Platform for this component instead (§7.2): a
    /// `component_verify_ticket` stamped as the oldest possible to the event
    /// URL; with --authorizer-app-id also that account's `subscribe` push
    /// (from --openid) to the message URL.
    #[arg(long, conflicts_with_all = ["app_id", "suite_id", "corp_id", "kf_id", "decrypted"])]
    pub component_app_id: Option<String>,
    /// An account authorized to the component.
    #[arg(long, requires = "component_app_id")]
    pub authorizer_app_id: Option<String>,
    /// Also push `authorized` for --authorizer-app-id with this code
    /// (the manager then asks WeChat to exchange it).
    #[arg(long, requires = "authorizer_app_id")]
    pub authorization_code: Option<String>,
    /// Send the gateway form (`/callback/decrypted/{corpId}`, JSON) instead.
    #[arg(long)]
    pub decrypted: bool,
}

/// One request's outcome, as printed.
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

fn escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Run the checks; `Ok(true)` when every one passed.
pub async fn run(args: SimulateArgs) -> anyhow::Result<bool> {
    let key =
        EncodingAesKey::parse(&args.aes_key).map_err(|e| anyhow::anyhow!("--aes-key: {e}"))?;
    let base = args.url.trim_end_matches('/');
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string();
    let nonce = rand::random::<u32>().to_string();
    let sync_token = format!("SIMULATED{}", rand::random::<u64>());
    let mut checks = Vec::new();
    let (corp_id, kf_id) = (
        args.corp_id.clone().unwrap_or_default(),
        args.kf_id.clone().unwrap_or_default(),
    );

    if let Some(suite_id) = &args.suite_id {
        let provider_corp = args.provider_corp_id.clone().unwrap_or_default();
        let suite = Sealing {
            key: &key,
            token: &args.token,
            timestamp: &timestamp,
            nonce: &nonce,
        };
        for url in ["command", "data"] {
            let echo = rand::random::<u64>().to_string();
            let query = suite.check_query(&echo, &provider_corp);
            let started = Instant::now();
            let sent = client
                .get(format!("{base}/suite/{suite_id}/{url}?{query}"))
                .send()
                .await;
            let name = if url == "command" {
                "command URL check"
            } else {
                "data URL check"
            };
            checks.push(answer_check(name, sent, &echo, started).await);
        }
        // (check, URL, sealed XML, receiveid)
        let mut pushes = vec![(
            "suite_ticket (oldest stamp)",
            "command",
            format!(
                "<xml><SuiteId><![CDATA[{suite_id}]]></SuiteId><InfoType><![CDATA[suite_ticket]]></InfoType>\
                 <TimeStamp>1</TimeStamp><SuiteTicket><![CDATA[SIMULATED{}]]></SuiteTicket></xml>",
                rand::random::<u64>()
            ),
            suite_id.as_str(),
        )];
        if let Some(code) = &args.auth_code {
            pushes.push((
                "create_auth",
                "command",
                format!(
                    "<xml><SuiteId><![CDATA[{suite_id}]]></SuiteId><InfoType><![CDATA[create_auth]]></InfoType>\
                     <TimeStamp>{timestamp}</TimeStamp><AuthCode><![CDATA[{code}]]></AuthCode><State></State></xml>"
                ),
                suite_id,
            ));
        }
        if !corp_id.is_empty() && !kf_id.is_empty() {
            pushes.push((
                "corp kf_msg_or_event (data URL)",
                "data",
                kf_event(&corp_id, &kf_id, &timestamp, &sync_token),
                &corp_id,
            ));
        }
        for (name, url, inner, receive_id) in pushes {
            let (query, body) = suite.push(&inner, receive_id);
            let started = Instant::now();
            let sent = client
                .post(format!("{base}/suite/{suite_id}/{url}?{query}"))
                .header("content-type", "text/xml")
                .body(body)
                .send()
                .await;
            checks.push(answer_check(name, sent, "success", started).await);
        }
    } else if let Some(component) = &args.component_app_id {
        let sealing = Sealing {
            key: &key,
            token: &args.token,
            timestamp: &timestamp,
            nonce: &nonce,
        };
        let events = format!("{base}/component/{component}/events");
        let mut pushes = vec![(
            "component_verify_ticket (oldest stamp)",
            events.clone(),
            format!(
                "<xml><AppId><![CDATA[{component}]]></AppId><CreateTime>1</CreateTime>\
                 <InfoType><![CDATA[component_verify_ticket]]></InfoType>\
                 <ComponentVerifyTicket><![CDATA[SIMULATED{}]]></ComponentVerifyTicket></xml>",
                rand::random::<u64>()
            ),
        )];
        if let (Some(account), Some(code)) = (&args.authorizer_app_id, &args.authorization_code) {
            pushes.push((
                "authorized",
                events,
                format!(
                    "<xml><AppId><![CDATA[{component}]]></AppId><CreateTime>{timestamp}</CreateTime>\
                     <InfoType><![CDATA[authorized]]></InfoType><AuthorizerAppid><![CDATA[{account}]]></AuthorizerAppid>\
                     <AuthorizationCode><![CDATA[{code}]]></AuthorizationCode></xml>"
                ),
            ));
        }
        if let Some(account) = &args.authorizer_app_id {
            pushes.push((
                "account subscribe (message URL)",
                format!("{base}/component/{component}/messages/{account}"),
                subscribe_event(&args.openid, &timestamp),
            ));
        }
        for (name, url, inner) in pushes {
            // Safe mode, sealed for the component whatever the account.
            let (query, body) = sealing.push(&inner, component);
            let started = Instant::now();
            let sent = client
                .post(format!("{url}?{query}&encrypt_type=aes"))
                .header("content-type", "text/xml")
                .body(body)
                .send()
                .await;
            checks.push(answer_check(name, sent, "success", started).await);
        }
    } else if let Some(app_id) = &args.app_id {
        let echo = rand::random::<u64>().to_string();
        let signature = sign(&args.token, &timestamp, &nonce, "");
        let started = Instant::now();
        let sent = client
            .get(format!(
                "{base}/wechat/{app_id}?signature={signature}&timestamp={timestamp}&nonce={nonce}&echostr={echo}"
            ))
            .send()
            .await;
        checks.push(answer_check("URL check (echostr as sent)", sent, &echo, started).await);

        let inner = subscribe_event(&args.openid, &timestamp);
        let encrypted = encrypt(&key, inner.as_bytes(), app_id);
        let msg_signature = sign(&args.token, &timestamp, &nonce, &encrypted);
        let started = Instant::now();
        let sent = client
            .post(format!(
                "{base}/wechat/{app_id}?signature={signature}&timestamp={timestamp}&nonce={nonce}\
                 &openid={openid}&encrypt_type=aes&msg_signature={msg_signature}",
                openid = escape(&args.openid)
            ))
            .header("content-type", "text/xml")
            .body(format!(
                "<xml><ToUserName><![CDATA[gh_simulated]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
            ))
            .send()
            .await;
        checks.push(answer_check("safe-mode subscribe push", sent, "success", started).await);
    } else if args.decrypted {
        let started = Instant::now();
        let sent = client
            .post(format!("{base}/callback/decrypted/{corp_id}"))
            .header("content-type", "application/json")
            .body(serde_json::json!({"token": sync_token, "openKfId": kf_id}).to_string())
            .send()
            .await;
        checks.push(answer_check("decrypted callback", sent, "roger", started).await);
    } else {
        let echo = rand::random::<u64>().to_string();
        let echostr = encrypt(&key, echo.as_bytes(), &corp_id);
        let signature = sign(&args.token, &timestamp, &nonce, &echostr);
        let started = Instant::now();
        let sent = client
            .get(format!(
                "{base}/callback/{corp_id}?msg_signature={signature}&timestamp={timestamp}&nonce={nonce}&echostr={}",
                escape(&echostr)
            ))
            .send()
            .await;
        checks.push(answer_check("URL verification (exact echo)", sent, &echo, started).await);

        let inner = kf_event(&corp_id, &kf_id, &timestamp, &sync_token);
        let encrypted = encrypt(&key, inner.as_bytes(), &corp_id);
        let signature = sign(&args.token, &timestamp, &nonce, &encrypted);
        let started = Instant::now();
        let sent = client
            .post(format!(
                "{base}/callback/{corp_id}?msg_signature={signature}&timestamp={timestamp}&nonce={nonce}"
            ))
            .header("content-type", "text/xml")
            .body(build_envelope(&corp_id, "", &encrypted))
            .send()
            .await;
        checks.push(answer_check("encrypted kf_msg_or_event", sent, "success", started).await);
    }

    for c in &checks {
        println!(
            "{:<4} {:<32} {}",
            if c.ok { "ok" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    Ok(checks.iter().all(|c| c.ok))
}

/// A follower's `subscribe` push as WeChat sends it.
fn subscribe_event(openid: &str, timestamp: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[gh_simulated]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>\
         <CreateTime>{timestamp}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[]]></EventKey></xml>"
    )
}

/// A customer-service wake-up as WeCom sends it.
fn kf_event(corp: &str, kf: &str, timestamp: &str, sync_token: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><CreateTime>{timestamp}</CreateTime>\
         <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>\
         <Token><![CDATA[{sync_token}]]></Token><OpenKfId><![CDATA[{kf}]]></OpenKfId></xml>"
    )
}

/// What WeCom seals and signs with one Token and EncodingAESKey.
struct Sealing<'a> {
    key: &'a EncodingAesKey,
    token: &'a str,
    timestamp: &'a str,
    nonce: &'a str,
}

impl Sealing<'_> {
    /// A URL check's query: `echo` sealed for `receive_id`.
    fn check_query(&self, echo: &str, receive_id: &str) -> String {
        let echostr = encrypt(self.key, echo.as_bytes(), receive_id);
        let signature = sign(self.token, self.timestamp, self.nonce, &echostr);
        format!(
            "msg_signature={signature}&timestamp={}&nonce={}&echostr={}",
            self.timestamp,
            self.nonce,
            escape(&echostr)
        )
    }

    /// A POST's query and envelope: `inner` sealed for `receive_id`.
    fn push(&self, inner: &str, receive_id: &str) -> (String, String) {
        let encrypted = encrypt(self.key, inner.as_bytes(), receive_id);
        let signature = sign(self.token, self.timestamp, self.nonce, &encrypted);
        (
            format!(
                "msg_signature={signature}&timestamp={}&nonce={}",
                self.timestamp, self.nonce
            ),
            build_envelope(receive_id, "", &encrypted),
        )
    }
}

async fn answer_check(
    name: &'static str,
    sent: Result<reqwest::Response, reqwest::Error>,
    expected: &str,
    started: Instant,
) -> Check {
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            return Check {
                name,
                ok: false,
                detail: format!(
                    "no answer: {}",
                    if e.is_timeout() {
                        "timed out"
                    } else {
                        "connection failed"
                    }
                ),
            }
        }
    };
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let ms = started.elapsed().as_millis();
    let ok = status == 200 && body == expected;
    let shown: String = body.chars().take(120).collect();
    let hint = if ok {
        ""
    } else {
        " (expected HTTP 200 and exactly that text)"
    };
    Check {
        name,
        ok,
        detail: format!("HTTP {status} in {ms} ms: {shown:?}{hint}"),
    }
}
