//! Envelope parse + signature verify + decrypt + inner event parse, on
//! arbitrary bytes. The first byte picks whether the fuzzer's ciphertext is
//! used as is, or the data is sealed first so decryption reaches the
//! plaintext parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wxkf_manager::wecom::{
    build_envelope, decrypt, encrypt_with_random, parse_envelope, parse_message, sign,
    verify_signature, EncodingAesKey,
};

const TOKEN: &str = "QDG6eK";
const CORP: &str = "wx5823bf96d3bd56c7";

fuzz_target!(|data: &[u8]| {
    let Ok(key) = EncodingAesKey::parse("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C") else {
        return;
    };
    let (mode, rest) = data.split_first().unwrap_or((&0, &[]));
    let body: Vec<u8> = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        // A well-formed envelope around fuzzer-chosen plaintext.
        let sealed = encrypt_with_random(&key, rest, CORP, [7; 16]);
        build_envelope(CORP, "1", &sealed).into_bytes()
    };
    let Ok(envelope) = parse_envelope(&body) else { return };
    let sig = sign(TOKEN, "1", "2", &envelope.encrypt);
    if !verify_signature(TOKEN, "1", "2", &envelope.encrypt, &sig) {
        panic!("a signature we just made must verify");
    }
    if let Ok(plain) = decrypt(&key, &envelope.encrypt, CORP) {
        let _ = parse_message(&plain.message);
    }
    let _ = decrypt(&key, &envelope.encrypt, "");
});
