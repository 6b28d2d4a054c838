//! `cohort-sync cohorts` and `cohort-sync usage`: read-only calls that cost no quota.

use clap::Args;
use cohort_sync::amplitude::{AmplitudeClient, ClientOptions, Credentials, Region};
use cohort_sync::exit;
use cohort_sync::text::escape;

/// Where to connect and with which credentials.
#[derive(Args, Debug)]
pub struct ConnectionArgs {
    /// Amplitude region (`us` or `eu`); ignored when --base-url is given.
    #[arg(long, value_enum, default_value = "us")]
    region: RegionArg,
    /// Base URL overriding the region (e.g. the emulator's `http://127.0.0.1:PORT`).
    #[arg(long, env = "AMPLITUDE_BASE_URL")]
    base_url: Option<String>,
    /// Accept a plain http:// --base-url on a host that is not loopback (the keys then
    /// travel unencrypted).
    #[arg(long)]
    allow_insecure_http: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum RegionArg {
    Us,
    Eu,
}

#[derive(Args, Debug)]
pub struct CohortsArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// Print the raw JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
pub struct UsageArgs {
    #[command(flatten)]
    connection: ConnectionArgs,
    /// The pipelines' state URL (local dir or s3://): also show the quota ledger's count,
    /// and use it when the usage endpoint is unavailable.
    #[arg(long, value_name = "URL")]
    state: Option<String>,
    /// The Amplitude project id (names the ledger; as `connection.app_id` in pipelines).
    #[arg(long, value_name = "ID")]
    app_id: Option<u64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

fn client(conn: &ConnectionArgs) -> Result<AmplitudeClient, u8> {
    let key = std::env::var("AMPLITUDE_API_KEY").map_err(|_| {
        eprintln!("error: AMPLITUDE_API_KEY is not set");
        exit::USAGE
    })?;
    let secret = std::env::var("AMPLITUDE_SECRET_KEY").map_err(|_| {
        eprintln!("error: AMPLITUDE_SECRET_KEY is not set");
        exit::USAGE
    })?;
    let base = match &conn.base_url {
        Some(url) => {
            let checked = cohort_sync::config::BaseUrl::try_from(url.clone()).map_err(|e| {
                eprintln!("error: --base-url: {e}");
                exit::USAGE
            })?;
            if checked.is_insecure() {
                if !conn.allow_insecure_http {
                    eprintln!(
                        "error: --base-url {} is plain http:// to a host that is not loopback: the API key and secret would travel unencrypted; use https://, or add --allow-insecure-http",
                        checked.as_str()
                    );
                    return Err(exit::USAGE);
                }
                tracing::warn!(
                    "--base-url {} is plain http:// to a host that is not loopback: the API key and secret travel unencrypted",
                    checked.as_str()
                );
            }
            checked.as_str().to_string()
        }
        None => match conn.region {
            RegionArg::Us => Region::Us.base_url().to_string(),
            RegionArg::Eu => Region::Eu.base_url().to_string(),
        },
    };
    AmplitudeClient::new(ClientOptions::new(base, Credentials::new(key, secret))).map_err(|e| {
        eprintln!("error: {e}");
        exit::FAILED
    })
}

pub async fn cohorts(args: CohortsArgs) -> u8 {
    let client = match client(&args.connection) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.list_cohorts(false).await {
        Ok(list) if args.json => match serde_json::to_string_pretty(&list) {
            Ok(text) => {
                println!("{text}");
                exit::OK
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::FAILED
            }
        },
        Ok(list) => {
            println!(
                "{:<14} {:>10} {:<9} {:<8} {:>12}  name",
                "id", "size", "published", "archived", "lastComputed"
            );
            for c in &list.cohorts {
                println!(
                    "{:<14} {:>10} {:<9} {:<8} {:>12}  {}",
                    escape(&c.id),
                    c.size.map(|s| s.to_string()).unwrap_or_default(),
                    c.published,
                    c.archived,
                    escape(
                        &c.last_computed
                            .as_ref()
                            .map(|t| t.to_string())
                            .unwrap_or_default()
                    ),
                    escape(&c.name)
                );
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("error: listing cohorts: {e}");
            exit::FAILED
        }
    }
}

pub async fn usage(args: UsageArgs) -> u8 {
    use cohort_sync::runner::usage::{UsageSource, read_usage};
    let client = match client(&args.connection) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let ledger = match &args.state {
        Some(url) => {
            let base = std::env::current_dir().unwrap_or_default();
            match cohort_sync::storage::open(url, &base) {
                Ok(loc) => Some(cohort_sync::state::Ledger::new(
                    loc,
                    args.app_id,
                    client.api_key(),
                )),
                Err(e) => {
                    eprintln!("error: --state {}: {}", escape(url), escape(&e.to_string()));
                    return exit::USAGE;
                }
            }
        }
        None => None,
    };
    let u = read_usage(&client, ledger.as_ref(), cohort_sync::clock::now()).await;
    if u.endpoint.is_none() && ledger.is_none() {
        eprintln!(
            "error: the usage endpoint is unavailable and no --state was given to count from the quota ledger"
        );
        return exit::FAILED;
    }
    let e = &u.effective;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "limit": e.limit,
                "usage": e.usage,
                "remaining": e.remaining(),
                "resets_at": e.resets_at,
                "source": u.source,
                "endpoint": u.endpoint.as_ref().map(|x| serde_json::json!({"limit": x.limit, "usage": x.usage})),
                "ledger": u.ledger,
                "warning": u.warning,
            })
        );
        return exit::OK;
    }
    println!(
        "{} of {} cohort downloads used this month, {} left (resets {})",
        e.usage,
        e.limit,
        e.remaining(),
        escape(e.resets_at.as_deref().unwrap_or("on the 1st, UTC"))
    );
    match &u.endpoint {
        Some(x) => println!("  usage endpoint: {} of {}", x.usage, x.limit),
        None => println!("  usage endpoint: unavailable (the default limit of 500 is assumed)"),
    }
    if let (Some(c), Some(l)) = (&u.ledger, &ledger) {
        println!(
            "  quota ledger:   {} ({} spent, {} of unknown outcome) at {}",
            c.total(),
            c.spent,
            c.unknown,
            l.describe()
        );
    }
    println!(
        "  counted from:   {}",
        match u.source {
            UsageSource::Endpoint => "the usage endpoint",
            UsageSource::Ledger => "the quota ledger (it counts more than the endpoint)",
            UsageSource::LedgerOnly => "the quota ledger (the endpoint is unavailable)",
        }
    );
    exit::OK
}
