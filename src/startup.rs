//! Building and running the application; used by `main` and by the tests.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use tokio::sync::watch;

use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::credentials::CredentialCache;
use crate::delivery::{Dispatcher, EndpointGuard, HostResolver, Sender, SystemResolver};
use crate::directory::Directory;
use crate::domain::EndpointPolicy;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use crate::providers::ProviderService;
use crate::store::{self, Store};
use crate::tokens::TokenService;

/// How often the in-memory credentials are re-read from the store.
const CREDENTIAL_REFRESH: Duration = Duration::from_secs(5);
/// How often what waits per target is noted for the dashboard's chart.
const BACKLOG_SAMPLE: Duration = Duration::from_secs(60);

pub struct Application {
    port: u16,
    server: Server,
    dispatcher: Arc<Dispatcher>,
    manual_delivery: bool,
    store: Arc<dyn Store>,
    credentials: Arc<CredentialCache>,
    directory: Arc<Directory>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

/// Open the configured store: MongoDB when `MONGO_URI` is set, else the
/// embedded store under `DATA_DIR`.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let sealer = store::Sealer::new(config.secrets_key.as_ref().map(|k| &k.0));
    match &config.mongo_uri {
        Some(uri) => Ok(Arc::new(
            store::mongo::MongoStore::connect_counting(
                uri.expose(),
                store::Retention {
                    finished: config.delivery.retention,
                    dead: config.delivery.dead_retention,
                },
                sealer,
                config
                    .mongo_command_counts
                    .then(|| Arc::new(store::mongo::CommandCounts::default())),
            )
            .await
            .context("MONGO_URI: cannot use the MongoDB store")?,
        )),
        None => Ok(Arc::new(
            store::sqlite::SqliteStore::open(&config.data_dir, sealer).with_context(|| {
                format!(
                    "DATA_DIR: cannot open the embedded store in {}",
                    config.data_dir.display()
                )
            })?,
        )),
    }
}

/// The stable identity of this instance: `INSTANCE_ID`, or one made once and
/// kept in `DATA_DIR`, so a restarted manager recognises its own claims.
fn instance_id(config: &Config) -> anyhow::Result<String> {
    if let Some(id) = &config.instance_id {
        return Ok(id.clone());
    }
    let path = config.data_dir.join("instance-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_owned());
        }
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("DATA_DIR: cannot create {}", config.data_dir.display()))?;
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, &id)
        .with_context(|| format!("DATA_DIR: cannot write {}", path.display()))?;
    Ok(id)
}

/// What the outside world is to the application: time and name resolution.
/// Production uses the system's; tests bring their own.
#[derive(Clone)]
pub struct Seams {
    pub clock: Arc<dyn Clock>,
    pub resolver: Arc<dyn HostResolver>,
    /// Deliver only when `Application::dispatcher().step()` is called (tests
    /// that drive delivery round by round); no background loop.
    pub manual_delivery: bool,
}

impl Default for Seams {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            resolver: Arc::new(SystemResolver),
            manual_delivery: false,
        }
    }
}

/// What an operator should hear at start about an exposed default.
pub fn startup_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.register_secret.is_none() && !config.host.is_loopback() {
        warnings.push(format!(
            "REGISTER_SECRET is not set and the manager listens on {}: anyone who reaches it can register puppets and choose where their callbacks go; set REGISTER_SECRET and give puppets the /s/<secret> base URL",
            config.host
        ));
    }
    if config.admin_token.is_none() {
        warnings.push(
            "ADMIN_TOKEN is not set: the admin API and dashboard are off (the CLI works)".into(),
        );
    }
    warnings
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Seams::default()).await
    }

    pub async fn build_with(config: Config, seams: Seams) -> anyhow::Result<Self> {
        let Seams {
            clock,
            resolver,
            manual_delivery,
        } = seams;
        for warning in startup_warnings(&config) {
            tracing::warn!("{warning}");
        }
        let store = open_store(&config).await?;
        let credentials = Arc::new(CredentialCache::default());
        if let Err(e) = credentials.refresh_all(store.as_ref()).await {
            tracing::warn!(error = %e, "could not preload corp credentials; they load on first use");
        }
        let directory = Arc::new(Directory::default());
        if let Err(e) = directory.refresh(store.as_ref()).await {
            tracing::warn!(error = %e, "could not load apps and subscriptions; retrying every second");
        }
        let endpoint_guard = EndpointGuard::new(
            EndpointPolicy::new(config.delivery.endpoint_allow.clone()),
            resolver,
        );
        let sender = Sender::new(
            config.delivery.attempt_timeout,
            config.delivery.max_concurrent,
            endpoint_guard.clone(),
        )
        .context("building the delivery HTTP client")?;
        let owner = instance_id(&config)?;
        let upstream = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the WeCom HTTP client")?;
        let metrics = Arc::new(Metrics::default());
        store.report_timings(metrics.clone());
        let tokens = Arc::new(TokenService::new(
            store.clone(),
            upstream.clone(),
            &config,
            clock.clone(),
            owner.clone(),
            metrics.clone(),
        ));
        let providers = Arc::new(ProviderService::new(
            store.clone(),
            tokens.clone(),
            upstream.clone(),
            &config,
            clock.clone(),
            metrics.clone(),
        ));
        let dispatcher = Arc::new(Dispatcher::new(
            store.clone(),
            sender,
            config.delivery.clone(),
            owner,
            clock.clone(),
            metrics.clone(),
            directory.clone(),
            providers.clone(),
        ));
        if config.mongo_uri.is_none() {
            dispatcher
                .handle()
                .write_health()
                .watch_space(config.data_dir.clone());
        }
        // Before the server accepts anything (see `take_back_claims`).
        dispatcher.take_back_claims().await;

        let listener = TcpListener::bind((config.host, config.port))
            .with_context(|| format!("PORT: cannot listen on {}:{}", config.host, config.port))?;
        let port = listener.local_addr()?.port();
        let register_limit = config.registration.per_minute.map(http::RateLimiter::new);
        let state = web::Data::new(AppState {
            store: store.clone(),
            credentials: credentials.clone(),
            directory: directory.clone(),
            dispatcher: dispatcher.handle(),
            clock: clock.clone(),
            config: Arc::new(config),
            upstream,
            tokens,
            providers,
            metrics: metrics.clone(),
            endpoint_guard,
            register_limit,
        });
        let server =
            HttpServer::new(move || App::new().app_data(state.clone()).configure(http::routes))
                .listen(listener)?
                // Slow senders are cut off rather than holding a connection.
                .client_request_timeout(Duration::from_secs(10))
                .shutdown_timeout(10)
                .run();
        Ok(Self {
            port,
            server,
            dispatcher,
            manual_delivery,
            store,
            credentials,
            directory,
            metrics,
            clock,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The delivery dispatcher (to `step` it by hand with `manual_delivery`).
    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        self.dispatcher.clone()
    }

    /// Stop the server from outside (tests); SIGTERM/SIGINT do the same.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serve until stopped; then let in-flight deliveries finish (bounded).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let dispatcher =
            (!self.manual_delivery).then(|| tokio::spawn(self.dispatcher.clone().run(stop_rx)));
        let (store, credentials) = (self.store.clone(), self.credentials.clone());
        let refresher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(CREDENTIAL_REFRESH);
            loop {
                tick.tick().await;
                if let Err(e) = credentials.refresh_all(store.as_ref()).await {
                    tracing::warn!(error = %e, "refreshing corp credentials failed");
                }
            }
        });
        let directory = tokio::spawn(self.directory.clone().keep_fresh(self.store.clone()));
        let (store, metrics, clock) =
            (self.store.clone(), self.metrics.clone(), self.clock.clone());
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(BACKLOG_SAMPLE);
            loop {
                tick.tick().await;
                let sampled =
                    crate::history::sample_backlogs(store.as_ref(), &metrics.history, clock.now());
                if let Err(e) = sampled.await {
                    tracing::warn!(error = %e, "sampling what waits for the dashboard failed");
                }
            }
        });
        let served = self.server.await;
        refresher.abort();
        directory.abort();
        sampler.abort();
        let _ = stop_tx.send(true);
        if let Some(dispatcher) = dispatcher {
            let _ = dispatcher.await;
        }
        tracing::info!("stopped");
        served
    }
}
