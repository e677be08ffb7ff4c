-- Embedded store, version 2: the shared access-token cache, and store metadata.

CREATE TABLE access_tokens (
    key             TEXT PRIMARY KEY,        -- corpid:sha1(corpsecret)
    access_token    TEXT,                    -- sealed when SECRETS_KEY is set
    access_token_fp TEXT,                    -- keyed fingerprint, to find a token by value
    expires_at      INTEGER NOT NULL DEFAULT 0,
    fetched_at      INTEGER NOT NULL DEFAULT 0,
    neg_errcode     INTEGER,
    neg_errmsg      TEXT,
    neg_until       INTEGER NOT NULL DEFAULT 0,
    forced_at       INTEGER NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_until     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX access_tokens_by_fp ON access_tokens (access_token_fp);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
