//! For the load benchmark only: writes pre-built requests for wrk, one per
//! line as `METHOD<TAB>PATH<TAB>BODY`, each a distinct, correctly signed
//! callback made with our own encrypt.
//!
//! `bench_requests KIND COUNT CORP TOKEN AES_KEY KF_PREFIX KF_COUNT > file`
//! KIND: encrypted | decrypted | verify | oa-safe (an Official Account's
//! safe-mode `subscribe` push to `/wechat/CORP`, CORP being the appId; each
//! from another openid)

use std::io::{BufWriter, Write};

use wxkf_manager::wecom::{build_envelope, encrypt, sign, EncodingAesKey};

fn escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, count, corp, token, key, kf_prefix, kf_count] = &args[..] else {
        eprintln!("usage: bench_requests KIND COUNT CORP TOKEN AES_KEY KF_PREFIX KF_COUNT");
        std::process::exit(2);
    };
    let count: usize = count.parse().unwrap_or(1000);
    let kf_count: usize = kf_count.parse().unwrap_or(1).max(1);
    let key = EncodingAesKey::parse(key).map_err(|e| std::io::Error::other(e.to_string()))?;
    let run = rand::random::<u32>();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for i in 0..count {
        let kf = format!("{kf_prefix}{}", i % kf_count);
        let sync_token = format!("B{run}T{i}");
        let (ts, nonce) = ("1700000000", i.to_string());
        match kind.as_str() {
            "encrypted" => {
                let inner = format!(
                    "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><CreateTime>1700000000</CreateTime>\
                     <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>\
                     <Token><![CDATA[{sync_token}]]></Token><OpenKfId><![CDATA[{kf}]]></OpenKfId></xml>"
                );
                let enc = encrypt(&key, inner.as_bytes(), corp);
                let sig = sign(token, ts, &nonce, &enc);
                let body = build_envelope(corp, "1000002", &enc);
                writeln!(out, "POST\t/callback/{corp}?msg_signature={sig}&timestamp={ts}&nonce={nonce}\t{body}")?;
            }
            "decrypted" => {
                let body = format!("{{\"token\":\"{sync_token}\",\"openKfId\":\"{kf}\"}}");
                writeln!(out, "POST\t/callback/decrypted/{corp}\t{body}")?;
            }
            "verify" => {
                let echo = format!("{run}{i}");
                let enc = encrypt(&key, echo.as_bytes(), corp);
                let sig = sign(token, ts, &nonce, &enc);
                writeln!(out, "GET\t/callback/{corp}?msg_signature={sig}&timestamp={ts}&nonce={nonce}&echostr={}\t", escape(&enc))?;
            }
            "oa-safe" => {
                let inner = format!(
                    "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><FromUserName><![CDATA[o_{run}_{i}]]></FromUserName>\
                     <CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType>\
                     <Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[]]></EventKey></xml>"
                );
                let enc = encrypt(&key, inner.as_bytes(), corp);
                let msg_sig = sign(token, ts, &nonce, &enc);
                let sig = sign(token, ts, &nonce, "");
                let body = format!(
                    "<xml><ToUserName><![CDATA[gh_bench]]></ToUserName><Encrypt><![CDATA[{enc}]]></Encrypt></xml>"
                );
                writeln!(
                    out,
                    "POST\t/wechat/{corp}?signature={sig}&timestamp={ts}&nonce={nonce}&openid=o_{i}&encrypt_type=aes&msg_signature={msg_sig}\t{body}"
                )?;
            }
            _ => {
                eprintln!("KIND: encrypted, decrypted, verify or oa-safe");
                std::process::exit(2);
            }
        }
    }
    out.flush()
}
