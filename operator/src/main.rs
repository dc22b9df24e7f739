//! `operator` — the TradeStore operator binary.
//!
//! ```text
//! operator crd        # print the CRD YAML on stdout
//! operator run [...]  # run the controller (flags below, each also an environment variable)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{error, info, warn};
use tradestore_operator::crd::TradeStore;
use tradestore_operator::leader::{Outcome, run_while_leader};
use tradestore_operator::metrics::Metrics;
use tradestore_operator::reconcile::{self, Context, Settings};
use tradestore_operator::server::{self, Health};
use tradestore_operator::sidecar::client::HttpSidecarClient;

/// The TradeStore operator.
#[derive(Parser, Debug)]
#[command(name = "operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the CustomResourceDefinition as YAML on stdout.
    Crd,
    /// Run the controller.
    Run(RunArgs),
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Namespaces to watch, comma-separated; empty or `*` for all namespaces.
    #[arg(long, env = "TRADESTORE_NAMESPACES", default_value = "", value_delimiter = ',')]
    namespaces: Vec<String>,

    /// Log format.
    #[arg(long, env = "TRADESTORE_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,

    /// Log filter (tracing syntax).
    #[arg(long, env = "TRADESTORE_LOG_LEVEL", default_value = "info")]
    log_level: String,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "TRADESTORE_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    metrics_addr: SocketAddr,

    /// Elect a leader with a Lease (run two replicas safely). Off: this replica always acts.
    #[arg(long, env = "TRADESTORE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Name of the Lease.
    #[arg(long, env = "TRADESTORE_LEASE_NAME", default_value = "tradestore-operator")]
    lease_name: String,

    /// Namespace of the Lease (default: the operator's own namespace from POD_NAMESPACE, else `default`).
    #[arg(long, env = "TRADESTORE_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,

    /// Seconds a Lease stays valid without renewal.
    #[arg(long, env = "TRADESTORE_LEASE_DURATION", default_value_t = 15)]
    lease_duration: u64,

    /// Seconds before expiry the holder renews.
    #[arg(long, env = "TRADESTORE_LEASE_GRACE", default_value_t = 5)]
    lease_grace: u64,

    /// Field manager of server-side apply.
    #[arg(long, env = "TRADESTORE_FIELD_MANAGER", default_value = reconcile::FIELD_MANAGER)]
    field_manager: String,

    /// Call each ready sidecar's API: /v1/status, on-demand and final snapshots (needs network
    /// access to pod IPs).
    #[arg(long, env = "TRADESTORE_PROBE_SIDECAR", default_value_t = true, action = clap::ArgAction::Set)]
    probe_sidecar: bool,

    /// Seconds between status refreshes of a healthy store.
    #[arg(long, env = "TRADESTORE_RESYNC_SECONDS", default_value_t = 60)]
    resync_seconds: u64,

    /// Seconds a deletion keeps retrying the final snapshot (finalSnapshotOnDelete) before it
    /// goes on without one.
    #[arg(long, env = "TRADESTORE_FINAL_SNAPSHOT_TIMEOUT_SECONDS", default_value_t = 600)]
    final_snapshot_timeout_seconds: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", tradestore_operator::crd::crd_yaml());
            Ok(())
        }
        Command::Run(args) => {
            init_tracing(&args);
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(run(args))
        }
    }
}

fn init_tracing(args: &RunArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn signalled() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let health = Health::default();
    let shutdown_rx = shutdown_on_signal();
    let mut srv_shutdown = shutdown_rx.clone();
    let server = tokio::spawn(server::serve(args.metrics_addr, metrics.clone(), health.clone(), async move {
        let _ = srv_shutdown.wait_for(|s| *s).await;
    }));
    info!(addr = %args.metrics_addr, "serving /metrics, /healthz, /readyz");

    // Several rustls providers are compiled into the workspace; pick kube's (ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await.context("connecting to the Kubernetes API")?;
    let scopes = scopes(&args.namespaces);
    info!(namespaces = ?scopes, "watching");
    let ctx =
        Arc::new(Context::new(client.clone(), metrics.clone(), settings(&args), Arc::new(HttpSidecarClient::new())));
    let work = {
        let client = client.clone();
        move |stop: watch::Receiver<bool>| run_controllers(client, ctx, scopes, stop)
    };

    let outcome = if args.leader_election {
        lead_when_elected(&args, client, &metrics, &health, shutdown_rx.clone(), work).await?
    } else {
        health.set_ready(true);
        metrics.leader.set(1);
        let (_always_tx, leader_rx) = watch::channel(true);
        run_while_leader(leader_rx, shutdown_rx.clone(), work).await
    };

    health.set_ready(false);
    match outcome {
        Outcome::LostLeadership => {
            error!("lost the leader Lease; exiting so this replica restarts as a candidate");
            std::process::exit(2);
        }
        Outcome::WorkEnded if !*shutdown_rx.borrow() => {
            anyhow::bail!("the controller stopped unexpectedly");
        }
        _ => {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    info!("stopped");
    Ok(())
}

/// A flag set once SIGTERM or SIGINT arrives.
fn shutdown_on_signal() -> watch::Receiver<bool> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        let sig = signalled().await;
        info!(signal = sig, "shutting down");
        let _ = shutdown_tx.send(true);
    });
    shutdown_rx
}

/// The watched scopes: one namespace each, or `None` for the whole cluster (empty or `*`).
fn scopes(namespaces: &[String]) -> Vec<Option<String>> {
    let namespaces: Vec<String> = namespaces.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    let all = namespaces.is_empty() || namespaces.iter().any(|n| n == "*");
    if all { vec![None] } else { namespaces.into_iter().map(Some).collect() }
}

fn settings(args: &RunArgs) -> Settings {
    Settings {
        field_manager: args.field_manager.clone(),
        probe_sidecar: args.probe_sidecar,
        resync: Duration::from_secs(args.resync_seconds.max(5)),
        final_snapshot_timeout: Duration::from_secs(args.final_snapshot_timeout_seconds),
        ..Settings::default()
    }
}

/// Runs `work` while this replica holds the Lease; releases it at the end.
async fn lead_when_elected<W, Fut>(
    args: &RunArgs,
    client: Client,
    metrics: &Metrics,
    health: &Health,
    shutdown_rx: watch::Receiver<bool>,
    work: W,
) -> anyhow::Result<Outcome>
where
    W: FnOnce(watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let lease_ns = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("tradestore-operator-{}", tradestore_operator::build::generate_token()));
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client, &args.lease_name)
        .with_namespace(&lease_ns)
        .with_identity(&identity)
        .with_duration(args.lease_duration)
        .with_grace(args.lease_grace)
        .build()
        .await
        .context("creating the lease manager")?;
    let (leader_rx, lease_task) = manager.watch().await;
    health.set_ready(true);
    info!(lease = %args.lease_name, namespace = %lease_ns, %identity, "waiting for leadership");
    let gauge_task = tokio::spawn(follow_leadership(leader_rx.clone(), metrics.leader.clone()));
    let outcome = run_while_leader(leader_rx, shutdown_rx, work).await;
    // All receivers dropped → the lease manager releases the Lease and ends.
    gauge_task.abort();
    let _ = gauge_task.await;
    metrics.leader.set(0);
    match tokio::time::timeout(Duration::from_secs(5), lease_task).await {
        Ok(Ok(Ok(_))) => info!("lease released"),
        Ok(Ok(Err(e))) => warn!(error = %e, "releasing the lease"),
        Ok(Err(e)) => warn!(error = %e, "lease task"),
        Err(_) => warn!("timed out releasing the lease"),
    }
    Ok(outcome)
}

/// Keeps the `leader` gauge equal to the Lease state.
async fn follow_leadership(mut leader_rx: watch::Receiver<bool>, gauge: prometheus::IntGauge) {
    loop {
        gauge.set(i64::from(*leader_rx.borrow_and_update()));
        if leader_rx.changed().await.is_err() {
            break;
        }
    }
}

/// One controller per watched scope (a namespace, or the whole cluster), until `stop` is set.
async fn run_controllers(client: Client, ctx: Arc<Context>, scopes: Vec<Option<String>>, stop: watch::Receiver<bool>) {
    info!("leading: starting the controller");
    let runs = scopes.into_iter().map(|scope| {
        let (stores, pods): (Api<DeserializeGuard<TradeStore>>, Api<Pod>) = match &scope {
            Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let mut stop = stop.clone();
        let ctx = ctx.clone();
        async move {
            let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=tradestore-operator");
            Controller::new(stores, watcher::Config::default())
                .owns(pods, owned)
                .graceful_shutdown_on(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .run(reconcile::reconcile, reconcile::error_policy, ctx)
                .for_each(|res| async move {
                    match res {
                        Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                        // Reconcile failures were logged by the error policy already.
                        Err(
                            e @ (kube::runtime::controller::Error::ReconcilerFailed(..)
                            | kube::runtime::controller::Error::ObjectNotFound(..)),
                        ) => {
                            tracing::debug!(error = %e, "controller")
                        }
                        Err(e) => warn!(error = %e, "controller"),
                    }
                })
                .await;
        }
    });
    futures::future::join_all(runs).await;
    info!("controller stopped");
}
