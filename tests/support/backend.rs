//! Which store a test runs on. `WXKF_TEST_STORE` picks the backend of
//! `spawn_app` (`sqlite`, the default, or `mongo`, with `MONGO_URI`);
//! `scripts/test` runs every tier once on each.
//!
//! A test that needs MongoDB whatever the backend under test (several
//! managers on one database, the old manager's documents, an outage) is
//! `#[ignore = "needs MongoDB ..."]`: plain `cargo test` reports it ignored,
//! never passed, and `scripts/test` runs it with `--include-ignored` once it
//! has started a server. It takes its database from `require_mongo`.

/// The backend under test: `WXKF_TEST_STORE=mongo` uses `MONGO_URI` with a
/// fresh database per app.
pub fn test_mongo_uri() -> Option<String> {
    match std::env::var("WXKF_TEST_STORE").as_deref() {
        Ok("mongo") => {
            let base = std::env::var("MONGO_URI").expect(
                "WXKF_TEST_STORE=mongo needs MONGO_URI; run scripts/test, which starts a MongoDB-wire test server",
            );
            Some(with_database(
                &base,
                &format!("t-{}", uuid::Uuid::new_v4().simple()),
            ))
        }
        _ => None,
    }
}

/// Replace the database name in a MongoDB URI.
pub fn with_database(uri: &str, db: &str) -> String {
    let (main, query) = uri
        .split_once('?')
        .map_or((uri, None), |(m, q)| (m, Some(q)));
    let scheme_end = main.find("://").map_or(0, |i| i + 3);
    let host_end = main[scheme_end..]
        .find('/')
        .map_or(main.len(), |i| scheme_end + i);
    let mut out = format!("{}/{db}", &main[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// A fresh database on `MONGO_URI`, for a test that needs MongoDB. Without
/// `MONGO_URI` the test fails saying how to run it: it never passes
/// without having run.
pub fn require_mongo() -> String {
    let uri = std::env::var("MONGO_URI").expect(
        "this test needs MongoDB: run scripts/test (it starts a MongoDB-wire test server), \
         or set MONGO_URI and run it with --include-ignored",
    );
    with_database(&uri, &format!("s-{}", uuid::Uuid::new_v4().simple()))
}
