//! The so1s binaries' command lines: clap definitions that become so1s-core calls, and
//! what the binaries share (logging set-up, the shutdown signal). Nothing here builds,
//! rolls out or serves: [`serve`] makes a [`so1s_core::server::ServeConfig`], [`client`]
//! calls [`so1s_core::client::ApiClient`], [`cluster`] prints manifests and runs a build
//! Job's context step, [`image`] builds the so1s image.
//!
//! Features: `inference` (so1s-predict, the in-process smoke test), `docker`,
//! `kubernetes`; all on by default. `--no-default-features --features docker,kubernetes`
//! gives an api server without libtorch.

pub mod client;
#[cfg(feature = "kubernetes")]
pub mod cluster;
#[cfg(feature = "docker")]
pub mod image;
pub mod serve;

/// The so1s image these binaries belong to.
pub const DEFAULT_SO1S_IMAGE: &str = concat!("so1s/so1s:", env!("CARGO_PKG_VERSION"));

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("interrupted: shutting down"),
        () = terminate => tracing::info!("SIGTERM: shutting down"),
    }
}
