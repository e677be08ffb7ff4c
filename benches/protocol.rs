//! Verify + decrypt + parse of a realistic `kf_msg_or_event` callback: the
//! protocol work of one acknowledgement.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use wxkf_manager::wecom::{
    build_envelope, decrypt, encrypt, parse_envelope, parse_message, sign, verify_signature,
    EncodingAesKey,
};

fn kf_callback() -> (EncodingAesKey, String, String, String, String, String) {
    let key = EncodingAesKey::parse("6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt").unwrap();
    let token = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo".to_owned();
    let corp = "ww1436e0e65a779aee";
    let inner = format!(
        "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><CreateTime>1700000000</CreateTime>\
         <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>\
         <Token><![CDATA[ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR]]></Token>\
         <OpenKfId><![CDATA[wkAJ2GCAAAZSfhHCt7IFSvLKtMPxyJTw]]></OpenKfId></xml>"
    );
    let encrypted = encrypt(&key, inner.as_bytes(), corp);
    let (ts, nonce) = ("1700000000".to_owned(), "1372623149".to_owned());
    let sig = sign(&token, &ts, &nonce, &encrypted);
    let body = build_envelope(corp, "1000002", &encrypted);
    (key, token, ts, nonce, sig, body)
}

fn bench_callback(c: &mut Criterion) {
    let (key, token, ts, nonce, sig, body) = kf_callback();
    let mut group = c.benchmark_group("callback");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify_decrypt_parse_kf_event", |b| {
        b.iter(|| {
            let envelope = parse_envelope(black_box(body.as_bytes())).unwrap();
            assert!(verify_signature(
                &token,
                &ts,
                &nonce,
                &envelope.encrypt,
                &sig
            ));
            let plain = decrypt(&key, &envelope.encrypt, "ww1436e0e65a779aee").unwrap();
            let msg = parse_message(&plain.message).unwrap();
            black_box(msg.open_kf_id);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_callback);
criterion_main!(benches);
