use clap::{Parser, Subcommand};
use wxkf_manager::cli::{self, DeliveriesCommand, PuppetsCommand};
use wxkf_manager::cli_channels;
use wxkf_manager::config::Config;
use wxkf_manager::startup::{open_store, Application};

/// The release and the commit it was built from (see build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("WXKF_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "wxkf-manager",
    version = VERSION,
    about = "WeCom customer-service callback manager"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending store migrations and exit.
    Migrate,
    /// Registered puppets.
    #[command(subcommand)]
    Puppets(PuppetsCommand),
    /// Accepted callbacks and their delivery.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// Official Accounts and Mini Programs (§6.1).
    #[command(subcommand)]
    Apps(cli_channels::AppsCommand),
    /// Where pushes go (§6.3).
    #[command(subcommand)]
    Subscriptions(cli_channels::SubscriptionsCommand),
    /// WeCom suites of a service provider, their corps and keys (§7.1).
    #[command(subcommand)]
    Suites(wxkf_manager::cli_providers::SuitesCommand),
    /// Open Platform components, their authorized accounts and keys (§7.2).
    #[command(subcommand)]
    Components(wxkf_manager::cli_providers::ComponentsCommand),
    /// Move what a store holds to another backend.
    #[command(subcommand)]
    Store(wxkf_manager::cli_store::StoreCommand),
    /// Act as WeCom against a deployment: URL check and a signed callback.
    Simulate(wxkf_manager::simulate::SimulateArgs),
}

fn main() {
    bound_malloc_arenas();
    run();
}

/// glibc's malloc gives each thread that allocates while the others hold
/// theirs a heap of its own, up to eight per core, and keeps what each has
/// touched. The manager's threads come and go (store calls run on tokio's
/// blocking pool): when a backlog drains, five more threads meant five more
/// heaps, and the fan-out case's peak went from 35 to 43 MiB within a
/// second (47 -> 40 MiB peak over three runs). Whether two heaps cost CPU
/// per callback was not settled by the runs (docs/performance.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_malloc_arenas() {
    // An operator's own MALLOC_ARENA_MAX (read by glibc itself) stands.
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a parameter of the allocator, before any
    // other thread exists; an unknown value is refused, not undefined.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_malloc_arenas() {}

#[tokio::main]
async fn run() {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            std::process::exit(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::Simulate(args) = command {
        match wxkf_manager::simulate::run(args).await {
            Ok(true) => std::process::exit(0),
            Ok(false) => std::process::exit(1),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
        }
    }
    let _guards = matches!(command, Command::Serve)
        .then(|| wxkf_manager::telemetry::init(config.log_path.as_deref()));
    let result = match command {
        Command::Serve => serve(config).await,
        Command::Migrate => open_store(&config)
            .await
            .map(|_| println!("migrations applied")),
        Command::Puppets(c) => match open_store(&config).await {
            Ok(store) => cli::puppets(store, c).await,
            Err(e) => Err(e),
        },
        Command::Deliveries(c) => match open_store(&config).await {
            Ok(store) => cli::deliveries(store, c).await,
            Err(e) => Err(e),
        },
        Command::Apps(c) => match open_store(&config).await {
            Ok(store) => cli_channels::apps(store, c).await,
            Err(e) => Err(e),
        },
        Command::Subscriptions(c) => match open_store(&config).await {
            Ok(store) => cli_channels::subscriptions(store, c).await,
            Err(e) => Err(e),
        },
        Command::Suites(c) => match open_store(&config).await {
            Ok(store) => wxkf_manager::cli_providers::suites(store, c).await,
            Err(e) => Err(e),
        },
        Command::Components(c) => match open_store(&config).await {
            Ok(store) => wxkf_manager::cli_providers::components(store, c).await,
            Err(e) => Err(e),
        },
        Command::Store(c) => match wxkf_manager::cli_store::run(&config, c).await {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(e) => Err(e),
        },
        Command::Simulate(_) => Ok(()),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    tracing::info!(port = app.port(), "wxkf-manager listening");
    app.run_until_stopped().await?;
    Ok(())
}
