//! The official test vectors of `shared/wecom-protocol.md` §10, and property
//! tests over encrypt/decrypt.

use proptest::prelude::*;

use super::*;

fn key(text: &str) -> EncodingAesKey {
    EncodingAesKey::parse(text).expect("vector key")
}

/// Verify then decrypt, as the callback handler does.
fn open(
    key_text: &str,
    token: &str,
    receive_id: &str,
    (sig, ts, nonce): (&str, &str, &str),
    data: &str,
) -> Result<Vec<u8>, ProtocolError> {
    if !verify_signature(token, ts, nonce, data, sig) {
        return Err(ProtocolError::Signature);
    }
    decrypt(&key(key_text), data, receive_id).map(|d| d.message)
}

const A_TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const A_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const A_ID: &str = "ww1436e0e65a779aee";

#[test]
fn a1_verify_url() {
    let out = open(
        A_KEY,
        A_TOKEN,
        A_ID,
        (
            "012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb",
            "1476416373",
            "47744683",
        ),
        "fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA==",
    )
    .unwrap();
    assert_eq!(out, b"1288432023552776189");
}

#[test]
fn a2_decrypt_pad_22_multibyte() {
    let enc = "Kl7kjoSf6DMD1zh7rtrHjFaDapSCkaOnwu3bqLc5tAybhhMl9pFeK8NslNPVdMwmBQTNoW4mY7AIjeLvEl3NyeTkAgGzBhzTtRLNshw2AEew+kkYcD+Fq72Kt00fT0WnN87hGrW8SqGc+NcT3mu87Ha3dz1pSDi6GaUA6A0sqfde0VJPQbZ9U+3JWcoD4Z5jaU0y9GSh010wsHF8KZD24YhmZH4ch4Ka7ilEbjbfvhKkNL65HHL0J6EYJIZUC2pFrdkJ7MhmEbU2qARR4iQHE7wy24qy0cRX3Mfp6iELcDNfSsPGjUQVDGxQDCWjayJOpcwocugux082f49HKYg84EpHSGXAyh+/oxwaWbvL6aSDPOYuPDGOCI8jmnKiypE+";
    let out = open(
        A_KEY,
        A_TOKEN,
        A_ID,
        (
            "0c3914025cb4b4d68103f6bfc8db550f79dcf48e",
            "1476422779",
            "1597212914",
        ),
        enc,
    )
    .unwrap();
    let expected = "<xml><ToUserName>ww1436e0e65a779aee</ToUserName><FromUserName>ChenJiaShun</FromUserName><CreateTime>1476422779</CreateTime><MsgType>text</MsgType><Content>你好</Content><MsgId>1456453720</MsgId><AgentID>1000002</AgentID></xml>";
    assert_eq!(out.len(), 228);
    assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
    let msg = parse_message(&out).unwrap();
    assert_eq!(msg.msg_id.as_deref(), Some("1456453720"));
}

#[test]
fn a3_json_payload_decrypts_even_though_it_is_malformed() {
    let enc = "cjhLUX7UU4yCSelv1vz7T0zT8huF51bAMVWriNvO1FMegHrQZNrtvRxbwf0fUPsFvwqR0U0fgiJNEA5Y30F2MoI2S7vv3EjVQ68C0cjw9frBoUE2Hj0BvFp9h3u6Vbsg4lc1C8AtHdaN8orKuNKkLRLuYEL52R1J3v8olJGZRLnRdVKIivixmX/eQpzgeExtp20jI1HxRP1AAZ6xZoILdqDPO549LO4WeG+685JRUTdiwcY5fjZlqeMxuT4PpMn1X9OWsS7NRj06Wa5E3Tvg4twjWp39KPfOdRte6P1T4JU=";
    let out = open(
        A_KEY,
        A_TOKEN,
        A_ID,
        (
            "e3647471e395139e2308c1fa963f2d648a00b90e",
            "1409659813",
            "1372623149",
        ),
        enc,
    )
    .unwrap();
    assert_eq!(out.len(), 176);
    assert!(String::from_utf8_lossy(&out).contains("\"FromUserName\": :mycreate\""));
}

const B_TOKEN: &str = "QDG6eK";
const B_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const B_ID: &str = "wx5823bf96d3bd56c7";

#[test]
fn b1_verify_url() {
    let out = open(
        B_KEY,
        B_TOKEN,
        B_ID,
        (
            "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
            "1409659589",
            "263014780",
        ),
        "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO+FZXvnaqQ==",
    )
    .unwrap();
    assert_eq!(out, b"1616140317555161061");
}

#[test]
fn b2_decrypt_pad_30() {
    let enc = "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj911L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOdnLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH03v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6BpNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN+E7Q==";
    let out = open(
        B_KEY,
        B_TOKEN,
        B_ID,
        (
            "477715d11cdb4164915debcba66cb864d751f3e6",
            "1409659813",
            "1372623149",
        ),
        enc,
    )
    .unwrap();
    assert_eq!(out.len(), 284);
    let msg = parse_message(&out).unwrap();
    assert_eq!(msg.to_user_name.as_deref(), Some(B_ID));
    assert_eq!(msg.from_user_name.as_deref(), Some("mycreate"));
    assert_eq!(msg.create_time.as_deref(), Some("1409659813"));
    assert_eq!(msg.msg_id.as_deref(), Some("4561255354251345929"));
}

const C_TOKEN: &str = "123456";
const C_KEY: &str = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR";
const C_ID: &str = "wx49f0ab532d5d035a";
const C_ECHO: &str =
    "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hOchLF6p+Q==";

#[test]
fn c1_verify_and_wrong_nonce_fails() {
    let sig = "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96";
    let out = open(
        C_KEY,
        C_TOKEN,
        C_ID,
        (sig, "1411443780", "437374425"),
        C_ECHO,
    )
    .unwrap();
    assert_eq!(out, b"5927782489442352469");
    let err = open(
        C_KEY,
        C_TOKEN,
        C_ID,
        (sig, "1411443780", "437374424"),
        C_ECHO,
    )
    .unwrap_err();
    assert_eq!(err, ProtocolError::Signature);
    assert_eq!(err.code(), -40001);
}

#[test]
fn c2_deterministic_encrypt_matches() {
    let reply = "<xml>\n<MsgType><![CDATA[text]]></MsgType>\n<Content><![CDATA[test]]></Content>\n<FromUserName><![CDATA[wx49f0ab532d5d035a]]></FromUserName>\n<ToUserName><![CDATA[messense]]></ToUserName>\n<AgentID>1</AgentID>\n<CreateTime>1411525903</CreateTime>\n</xml>";
    let enc = encrypt_with_random(&key(C_KEY), reply.as_bytes(), C_ID, *b"1234567890123456");
    assert_eq!(enc, "9s4gMv99m88kKTh/H8IdkOiMg6bisoy3ypwy9H4hvSPe9nsGaqyw5hhSjdYbcrKk+j3nba4HMOTzHrluLBYqxgNcBqGsL8GqxlhZgURnAtObvesEl5nZ+uBE8bviY0LWke8Zy9V/QYKxNV2FqllNXcfmstttyIkMKCCmVbCFM2JTF5wY0nFhHZSjPUL2Q1qvSUCUld+/WIXrx0oyKQmpB6o8NRrrNrsDf03oxI1p9FxUgMnwKKZeOA/uu+2IEvEBtb7muXsVbwbgX05UPPJvFurDXafG0RQyPR+mf1nDnAtQmmNOuiR5MIkdQ39xn1vWwi1O5oazPoQJz0nTYjxxEE8kv3kFxtAGVRe3ypD3WeK2XeFYFMNMpatF9XiKzHo3");
    assert_eq!(
        sign(C_TOKEN, "1411525903", "461056294", &enc),
        "407518b7649e86ef23978113f92d27afa9296533"
    );
}

#[test]
fn c3_decrypt_pad_1() {
    let enc = "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDXzF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3So2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=";
    let sig = "74d92dfeb87ba7c714f89d98870ae5eb62dff26d";
    let out = open(C_KEY, C_TOKEN, C_ID, (sig, "1411525903", "461056294"), enc).unwrap();
    assert_eq!(out.len(), 281);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("<Content><![CDATA[test]]></Content>"));
    assert!(text.contains("messense"));
}

#[test]
fn d_deterministic_encrypt_of_chinese_text() {
    let k = key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG");
    let enc = encrypt_with_random(
        &k,
        "我是中文abcd123".as_bytes(),
        "wxb11529c136998cb6",
        *b"aaaabbbbccccdddd",
    );
    assert_eq!(
        enc,
        "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
    );
    assert_eq!(
        sign("pamtest", "1409304348", "xxxxxx", &enc),
        "82c962d39941aa48552f90ef55aa323dc620cc10"
    );
    assert_eq!(
        decrypt(&k, &enc, "wxb11529c136998cb6")
            .unwrap()
            .as_str()
            .unwrap(),
        "我是中文abcd123"
    );
}

// ---- rejection of each error variant -------------------------------------

/// Encrypt a raw, already padded plaintext buffer (to forge bad structure).
fn encrypt_raw(k: &EncodingAesKey, plain: &[u8]) -> String {
    use aes::cipher::{block_padding::NoPadding, BlockEncryptMut, KeyIvInit};
    use base64::Engine;
    let c = cbc::Encryptor::<aes::Aes256>::new(k.aes_key().into(), k.iv().into())
        .encrypt_padded_vec_mut::<NoPadding>(plain);
    base64::engine::general_purpose::STANDARD.encode(c)
}

#[test]
fn receiveid_of_another_corp_is_rejected_and_empty_expected_id_skips_the_check() {
    let k = key(A_KEY);
    let enc = encrypt(&k, b"<xml/>", "wwOTHER");
    assert_eq!(
        decrypt(&k, &enc, A_ID).unwrap_err(),
        ProtocolError::ReceiveId
    );
    assert_eq!(decrypt(&k, &enc, A_ID).unwrap_err().code(), -40005);
    assert_eq!(decrypt(&k, &enc, "").unwrap().message, b"<xml/>");
}

#[test]
fn bad_base64_and_bad_lengths_are_typed_errors() {
    let k = key(A_KEY);
    assert_eq!(decrypt(&k, "not base64!", A_ID).unwrap_err().code(), -40010);
    assert_eq!(decrypt(&k, "abc d===", A_ID).unwrap_err().code(), -40010);
    assert_eq!(decrypt(&k, "", A_ID).unwrap_err().code(), -40007);
    // 15 bytes: not a multiple of 16.
    assert_eq!(
        decrypt(&k, "AAAAAAAAAAAAAAAAAAAA", A_ID)
            .unwrap_err()
            .code(),
        -40007
    );
}

#[test]
fn pad_zero_and_pad_33_are_rejected() {
    let k = key(A_KEY);
    for pad in [0u8, 33, 255] {
        let mut plain = vec![b'x'; 64];
        plain[63] = pad;
        let err = decrypt(&k, &encrypt_raw(&k, &plain), A_ID).unwrap_err();
        assert_eq!(err.code(), -40008, "pad {pad}");
    }
}

#[test]
fn length_field_past_the_buffer_is_rejected() {
    let k = key(A_KEY);
    let mut plain = vec![0u8; 32];
    plain[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    plain[31] = 1;
    assert_eq!(
        decrypt(&k, &encrypt_raw(&k, &plain), A_ID).unwrap_err(),
        ProtocolError::IllegalBuffer("message length points past the buffer")
    );
    // Padding that eats the header.
    let mut short = vec![0u8; 32];
    short[31] = 20;
    assert_eq!(
        decrypt(&k, &encrypt_raw(&k, &short), A_ID)
            .unwrap_err()
            .code(),
        -40008
    );
}

// ---- properties ------------------------------------------------------------

fn any_key() -> impl Strategy<Value = EncodingAesKey> {
    "[A-Za-z0-9]{43}".prop_map(|s| EncodingAesKey::parse(&s).expect("43 alphanumerics decode"))
}

proptest! {
    #[test]
    fn encrypt_then_decrypt_round_trips(
        k in any_key(),
        msg in ".{0,80}",
        extra in 0usize..32,
        id in "[a-z0-9]{0,20}",
    ) {
        // `extra` ASCII bytes shift the length through every pad value 1..=32.
        let message = format!("{msg}{}", "a".repeat(extra));
        let enc = encrypt(&k, message.as_bytes(), &id);
        let out = decrypt(&k, &enc, &id).unwrap();
        prop_assert_eq!(out.message, message.into_bytes());
    }

    #[test]
    fn flipped_ciphertext_byte_never_panics_nor_passes_unnoticed(
        k in any_key(),
        msg in "[a-zA-Z0-9 ]{0,64}",
        pos in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        use base64::Engine;
        let id = "ww1436e0e65a779aee";
        let enc = encrypt(&k, msg.as_bytes(), id);
        let mut raw = base64::engine::general_purpose::STANDARD.decode(&enc).unwrap();
        let i = pos.index(raw.len());
        raw[i] ^= 1 << bit;
        let tampered = base64::engine::general_purpose::STANDARD.encode(&raw);
        // The signature covers the ciphertext, so tampering is always detected there.
        let sig = sign("tok", "1", "2", &enc);
        prop_assert!(!verify_signature("tok", "1", "2", &tampered, &sig));
        // Decryption of the tampered text is an error or garbled bytes, never a
        // panic (the random prefix and pad filler are not authenticated, which
        // is why the signature is checked first).
        let _ = decrypt(&k, &tampered, id);
    }

    #[test]
    fn flipped_signature_is_rejected(sig_pos in 0usize..40, data in "[A-Za-z0-9+/=]{1,64}") {
        let sig = sign("tok", "1", "2", &data);
        let mut bytes = sig.into_bytes();
        bytes[sig_pos] = if bytes[sig_pos] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(bytes).unwrap();
        prop_assert!(!verify_signature("tok", "1", "2", &data, &flipped));
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_parsers(doc in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_envelope(&doc);
        let _ = parse_message(&doc);
    }
}
