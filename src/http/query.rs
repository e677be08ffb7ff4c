//! Query-string access that percent-decodes but never turns `+` into a space:
//! base64 signatures and echostrs contain `+`, and a form decoder breaks them.

use percent_encoding::percent_decode_str;

/// The first value of `name`, percent-decoded; `None` if absent or not UTF-8.
pub fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            percent_decode_str(v)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
        })?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_stays_plus_and_escapes_decode() {
        let q = "echostr=ab+c%2Bd%3D%3D&nonce=1&empty=&flag";
        assert_eq!(param(q, "echostr").as_deref(), Some("ab+c+d=="));
        assert_eq!(param(q, "nonce").as_deref(), Some("1"));
        assert_eq!(param(q, "empty").as_deref(), Some(""));
        assert_eq!(param(q, "flag").as_deref(), Some(""));
        assert_eq!(param(q, "missing"), None);
        assert_eq!(param("x=%ff", "x"), None);
    }
}
