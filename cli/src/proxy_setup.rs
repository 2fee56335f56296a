//! Starts the pod proxy of `pinacle up`/`pinacle server`: its plain and
//! HTTPS listeners, the certificate store, ACME issuance and renewal.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pinacle_api::pod_access::ProxySite;
use pinacle_api::AppState;
use pinacle_proxy::acme::{Acme, AcmeConfig};
use pinacle_proxy::tls::{CertStore, TlsConfigs};
use pinacle_proxy::Proxy;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::up::ServeArgs;

fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// Starts whichever proxy listeners `args` ask for; none: does nothing.
pub async fn start(args: &ServeArgs, state: &AppState, stop: &watch::Receiver<bool>, tasks: &mut JoinSet<()>) -> Result<()> {
    if args.proxy_listen.is_none() && args.proxy_tls_listen.is_none() {
        return Ok(());
    }
    let domain = args.domain.trim_end_matches('.').to_ascii_lowercase();
    let resolver = Arc::new(pinacle_api::proxy_routes::PodRoutes::new(state.clone(), domain.clone()));
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let mut certs = None;
    let mut acme = None;
    let mut tls_listener = None;
    if let Some(addr) = args.proxy_tls_listen {
        let store = Arc::new(CertStore::open(&args.data_dir.join("certs")).context("opening the certificate store")?);
        match (&args.tls_cert, &args.tls_key, &args.acme_directory) {
            (Some(cert), Some(key), _) => {
                let read = |p: &std::path::Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
                store
                    .install(&format!("*.{domain}"), &read(cert)?, &read(key)?)
                    .with_context(|| format!("--tls-cert {} / --tls-key {}", cert.display(), key.display()))?;
            }
            (None, None, Some(directory)) => {
                let cfg = AcmeConfig {
                    directory_url: directory.clone(),
                    root_ca: args.acme_ca_root.clone(),
                    contact: args.acme_email.iter().map(|e| format!("mailto:{e}")).collect(),
                    challenge: args.acme_challenge.parse().map_err(anyhow::Error::msg)?,
                    dns_hook: args.acme_dns_hook.clone(),
                    renew_before: Duration::from_secs(args.acme_renew_before),
                    state_dir: args.data_dir.clone(),
                };
                acme = Some(Arc::new(Acme::with_metrics(cfg, Arc::clone(&store), state.metrics.proxy.clone())));
            }
            _ => bail!(
                "--proxy-tls-listen needs certificates: give --acme-directory URL (such as \
                 https://acme-v02.api.letsencrypt.org/directory) or --tls-cert FILE --tls-key FILE"
            ),
        }
        // bound now, so that the port is known; served below
        let probe = std::net::TcpListener::bind(addr).with_context(|| format!("proxy: listening on {addr}"))?;
        let bound = probe.local_addr()?;
        drop(probe);
        certs = Some(store);
        tls_listener = Some(bound);
    }

    let https_port = tls_listener.map(|a| a.port());
    let proxy = Arc::new(Proxy {
        resolver,
        certs: certs.clone(),
        acme: acme.clone(),
        domain: domain.clone(),
        https_redirect_port: https_port.filter(|_| !args.no_https_redirect),
        metrics: state.metrics.proxy.clone(),
    });

    let threads = args.proxy_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let plain_port = match args.proxy_listen {
        Some(addr) if threads == 0 => {
            // on the shared runtime, with the API
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("proxy: listening on {addr}"))?;
            let bound = listener.local_addr()?;
            say(&format!("Pinacle proxy listening on http://{bound} for *.{domain}"));
            let (proxy, rx) = (Arc::clone(&proxy), stop.clone());
            tasks.spawn(async move { pinacle_proxy::serve(listener, proxy, until_stopped(rx)).await });
            Some(bound.port())
        }
        Some(addr) => {
            let (bound, _threads) = pinacle_proxy::serve_threads(addr, threads, Arc::clone(&proxy), None, stop.clone())
                .with_context(|| format!("proxy: listening on {addr}"))?;
            say(&format!("Pinacle proxy listening on http://{bound} for *.{domain}"));
            Some(bound.port())
        }
        None => None,
    };

    if let (Some(addr), Some(store)) = (tls_listener, certs) {
        let configs = Arc::new(TlsConfigs::new(&store)?);
        let (bound, _threads) = pinacle_proxy::serve_threads(addr, threads, Arc::clone(&proxy), Some(configs), stop.clone())
            .with_context(|| format!("proxy: listening on {addr}"))?;
        say(&format!("Pinacle proxy listening on https://{bound} for *.{domain}"));
        if let Some(acme) = acme {
            if acme.uses_wildcard() {
                // One certificate for every pod host, issued now (in the
                // background: the listener serves once it is there).
                let (acme, name) = (Arc::clone(&acme), format!("*.{domain}"));
                tasks.spawn(async move {
                    if let Err(e) = acme.ensure(&name).await {
                        tracing::error!(error = %e, "wildcard certificate not issued; HTTPS handshakes will fail until it is");
                    }
                });
            }
            let rx = stop.clone();
            tasks.spawn(acme.renew_periodically(Duration::from_secs(args.acme_check_interval), until_stopped(rx)));
        }
    }

    let site = match (https_port, plain_port) {
        (Some(port), _) => ProxySite { domain, scheme: "https", port },
        (None, Some(port)) => ProxySite { domain, scheme: "http", port },
        (None, None) => return Ok(()),
    };
    let _ = state.proxy_site.set(site);
    Ok(())
}
