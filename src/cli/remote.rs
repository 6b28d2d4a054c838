//! `cohort-sync cohorts` and `cohort-sync usage`: read-only calls that cost no quota.

use clap::Args;
use cohort_sync::amplitude::{AmplitudeClient, ClientOptions, Credentials, Region};
use cohort_sync::exit;

/// Where to connect and with which credentials.
#[derive(Args, Debug)]
pub struct ConnectionArgs {
    /// Amplitude region (`us` or `eu`); ignored when --base-url is given.
    #[arg(long, value_enum, default_value = "us")]
    region: RegionArg,
    /// Base URL overriding the region (e.g. the emulator's `http://127.0.0.1:PORT`).
    #[arg(long, env = "AMPLITUDE_BASE_URL")]
    base_url: Option<String>,
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
        Some(url) => url.clone(),
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
                    c.id,
                    c.size.map(|s| s.to_string()).unwrap_or_default(),
                    c.published,
                    c.archived,
                    c.last_computed
                        .as_ref()
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    c.name
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
    let client = match client(&args.connection) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.usage().await {
        Ok(u) if args.json => {
            println!(
                "{}",
                serde_json::json!({"limit": u.limit, "usage": u.usage, "remaining": u.remaining(), "resets_at": u.resets_at})
            );
            exit::OK
        }
        Ok(u) => {
            println!(
                "{} of {} cohort downloads used this month, {} left (resets {})",
                u.usage,
                u.limit,
                u.remaining(),
                u.resets_at.as_deref().unwrap_or("on the 1st, UTC")
            );
            exit::OK
        }
        Err(e) => {
            eprintln!("error: reading usage: {e}");
            exit::FAILED
        }
    }
}
