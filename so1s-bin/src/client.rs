//! The client commands of `so1s` (`deploy`, `status`, `predict`, `rollback`, `promote`,
//! `traffic`, `scale`, `token`): flags, a call of [`ApiClient`], and the answer printed.

use anyhow::Context;
use so1s_core::auth::{Role, Token};
use so1s_core::client::ApiClient;
use so1s_core::model::VersionId;
use so1s_core::registry::VersionState;
use so1s_core::rollout::Split;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// How client commands reach the api server.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// The api server.
    #[arg(
        long,
        global = true,
        env = "SO1S_SERVER",
        default_value = "http://127.0.0.1:8000"
    )]
    pub server: String,
    /// The api token (default: `<data-dir>/admin.token`, when that file exists).
    #[arg(long, global = true, env = "SO1S_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The data directory of a local `so1s serve`, to find its admin token.
    #[arg(
        long,
        global = true,
        env = "SO1S_DATA_DIR",
        default_value = "so1s-data"
    )]
    pub data_dir: PathBuf,
}

impl ClientArgs {
    /// A client with the token given, else the local data dir's admin token.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        let token = match &self.token {
            Some(token) => Some(Token::new(token.clone())),
            None => {
                let path = so1s_core::auth::admin_token_path(&self.data_dir);
                match std::fs::read_to_string(&path) {
                    Ok(secret) => Some(Token::new(secret)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
        };
        Ok(ApiClient::new(&self.server, token))
    }
}

/// `so1s traffic NAME [VERSION=WEIGHT ...]`: shows the split, or sets it from the pairs.
pub async fn traffic(
    client: &ApiClient,
    name: &str,
    weights: &[String],
) -> anyhow::Result<ExitCode> {
    if weights.is_empty() {
        return print_json(client.traffic(name).await);
    }
    let split = parse_split(weights)?;
    print_json(client.set_traffic(name, &split).await)
}

/// `so1s scale NAME [--idle-after D]`: shows the model's scale, or sets its idle policy.
pub async fn scale(
    client: &ApiClient,
    name: &str,
    idle_after: Option<u64>,
) -> anyhow::Result<ExitCode> {
    match idle_after {
        Some(seconds) => print_json(client.set_idle_after(name, seconds).await),
        None => print_json(client.model(name).await.map(|model| model.scale)),
    }
}

/// `30s`, `5m`, `1h` or plain seconds → seconds.
pub fn parse_idle_after(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}`: give a duration such as 30s, 5m or 1h"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("`{text}`: the unit is s, m or h")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// `v1=70 v2=30` → the split.
pub fn parse_split(pairs: &[String]) -> anyhow::Result<Split> {
    let arms = pairs
        .iter()
        .map(|pair| {
            let (version, weight) = pair
                .split_once('=')
                .with_context(|| format!("`{pair}`: give VERSION=WEIGHT, as in v2=30"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("`{pair}`: the weight is a whole percent, 0 to 100"))?;
            Ok((VersionId::parse(version.trim())?, weight))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Split::new(arms)?)
}

/// `so1s token ...`
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token; it is printed once, alone on the last line.
    Create {
        /// What it may do: viewer, deployer or admin.
        #[arg(long)]
        role: Role,
        /// Its name (default: the role and the time).
        #[arg(long)]
        name: Option<String>,
    },
    /// List the tokens that are not revoked.
    List,
    /// Revoke a token: it stops working at once.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Prints an answer as pretty JSON; an error answer is a failure (exit 1, or 3 when
/// unreachable, as `main` decides).
pub fn print_json(answer: so1s_core::Result<impl serde::Serialize>) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&answer?)?);
    Ok(ExitCode::SUCCESS)
}

/// `so1s token create|list|revoke`.
pub async fn token(client: &ApiClient, command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create { role, name } => {
            let name = name.unwrap_or_else(|| format!("{role}-{}", unix_seconds()));
            let created = client.create_token(&name, role).await?;
            eprintln!("created the {role} token `{name}`; it is shown this once:");
            println!("{}", created.token);
        }
        TokenCommand::List => {
            let listed = client.tokens().await?;
            println!("{:<32} {:<9} {:<24} LAST USED", "NAME", "ROLE", "CREATED");
            for token in listed.tokens {
                println!(
                    "{:<32} {:<9} {:<24} {}",
                    token.name,
                    token.role.to_string(),
                    time_text(Some(token.created_at_ms)),
                    time_text(token.last_used_at_ms),
                );
            }
        }
        TokenCommand::Revoke { name } => {
            client.revoke_token(&name).await?;
            println!("revoked `{name}`");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`, or `never`.
fn time_text(ms: Option<u64>) -> String {
    ms.and_then(|ms| jiff::Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok())
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".into())
}

/// `so1s deploy`: packs a directory (or reads an archive), uploads it, follows its events
/// until it settles; exit 0 when live.
pub async fn deploy(client: &ApiClient, path: &Path, name: &str) -> anyhow::Result<ExitCode> {
    let body = if path.is_dir() {
        eprintln!("packing {}", path.display());
        so1s_core::build::pack_dir(path).map_err(|e| anyhow::anyhow!(e.chain()))?
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    };
    eprintln!("uploading {} bytes as {name}", body.len());
    let stored = match client.upload(name, body).await {
        Ok(stored) => stored,
        Err(so1s_core::Error::Client(so1s_core::ClientError::Remote {
            status, message, ..
        })) => {
            eprintln!("upload refused ({status}): {message}");
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let version = stored.version().to_string();
    eprintln!("stored {name} {version}; following its build and rollout");
    let settled = client
        .follow(name, &version, |event| {
            let stage = serde_json::to_value(event.stage).unwrap_or_default();
            eprintln!("[{}] {}", stage.as_str().unwrap_or(""), event.message);
        })
        .await?;
    let server = client.base();
    match settled.state() {
        VersionState::Live => {
            println!("{name} {version} is live: POST {server}/inference/{name}/predict");
            Ok(ExitCode::SUCCESS)
        }
        state => {
            println!(
                "{name} {version} is {}: {}",
                state.as_str(),
                settled
                    .record
                    .error
                    .as_deref()
                    .unwrap_or("see the events above")
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// Seconds since the Unix epoch: a default token name that does not repeat.
fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_on_the_command_line_make_a_split() {
        let pairs = |text: &str| text.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let split = parse_split(&pairs("v1=70 v2=30")).unwrap();
        assert_eq!(split.describe(), "v1 70%, v2 30%");
        for (text, says) in [
            ("v1=70 v2", "give VERSION=WEIGHT"),
            ("v1=70 v2=thirty", "whole percent"),
            ("v1=70 v2=20", "add up to 90"),
            ("latest=100", "invalid version"),
        ] {
            let err = format!("{:#}", parse_split(&pairs(text)).unwrap_err());
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn idle_durations_read_as_seconds() {
        for (text, seconds) in [("0", 0), ("45", 45), ("30s", 30), ("5m", 300), ("2h", 7200)] {
            assert_eq!(parse_idle_after(text), Ok(seconds), "{text}");
        }
        for (text, says) in [("5d", "unit is s, m or h"), ("m", "give a duration")] {
            let err = parse_idle_after(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
