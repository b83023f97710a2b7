//! Who may call the management api: bearer tokens with a [`Role`].
//!
//! - [`Token`]: a secret (`so1s_` + 64 hex digits, 256 random bits), shown once when made and
//!   stored only as its [`TokenHash`] (sha256). `Debug` and `Display` never print it.
//! - [`Role`]: `viewer` < `deployer` < `admin`; a route asks for the least role it needs.
//! - [`Tokens`]: the stored tokens ([`store::TokenStore`], SQLite) plus the optional
//!   `SO1S_ADMIN_TOKEN`; [`Tokens::authenticate`] compares hashes in constant time.
//!
//! Tokens are random, not chosen by people, so a fast hash is enough: nothing to guess.

mod store;

pub use store::{TokenInfo, TokenStore};

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use subtle::ConstantTimeEq;

/// What a token may do. Ordered: each role may do what the ones below it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Read models, versions and events.
    Viewer,
    /// Also upload, roll back, delete and set traffic.
    Deployer,
    /// Also manage tokens.
    Admin,
}

impl Role {
    /// The role's name as the api and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "admin" => Ok(Role::Admin),
            _ => Err(Error::InvalidInput(format!(
                "unknown role `{s}`: use viewer, deployer or admin"
            ))),
        }
    }
}

/// The prefix of every token so1s makes (easy to spot by secret scanners).
pub const TOKEN_PREFIX: &str = "so1s_";

/// A token in clear. Only its creator sees it, once.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A new random token: 256 bits from the operating system's generator.
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(|e| Error::Io {
            context: "drawing a random token".into(),
            source: std::io::Error::other(e),
        })?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self(format!("{TOKEN_PREFIX}{hex}")))
    }

    /// A token given by someone (a header, `SO1S_ADMIN_TOKEN`); surrounding blanks dropped.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into().trim().to_owned())
    }

    /// The secret itself, to send or write where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its hash, as stored.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The sha256 of a token: what is stored and compared.
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// From stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The bytes to store.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Equality in constant time.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(<redacted>)")
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The token's name (`SO1S_ADMIN_TOKEN` for the one from the environment).
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Identity {
    /// Refuses (403) a caller whose role is below `needed`.
    pub fn require(&self, needed: Role) -> Result<()> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "the token `{}` has the role {}; this needs {needed}",
                self.name, self.role
            )))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<Token> {
    let (scheme, token) = header.trim().split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| Token::new(token))
}

/// The file the first start writes its admin token to.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// Every token the api server accepts.
pub struct Tokens {
    store: TokenStore,
    env_admin: Option<TokenHash>,
}

/// The name [`Identity`] carries for `SO1S_ADMIN_TOKEN`.
pub const ENV_ADMIN_NAME: &str = "SO1S_ADMIN_TOKEN";

impl Tokens {
    /// The stored tokens, and `env_admin` (from `SO1S_ADMIN_TOKEN`) as an admin token.
    pub fn new(store: TokenStore, env_admin: Option<Token>) -> Self {
        Self {
            store,
            env_admin: env_admin
                .filter(|t| !t.expose().is_empty())
                .map(|t| t.hash()),
        }
    }

    /// Makes sure someone can get in: with no `SO1S_ADMIN_TOKEN` and no stored token, a new
    /// admin token is written to `<data_dir>/admin.token` (mode 0600). Returns that path
    /// when it did so.
    pub fn bootstrap(&self, data_dir: &Path) -> Result<Option<PathBuf>> {
        if self.env_admin.is_some() || self.store.has_active()? {
            return Ok(None);
        }
        let token = Token::generate()?;
        let path = admin_token_path(data_dir);
        write_secret(&path, token.expose())?;
        self.store.insert("admin", Role::Admin, &token.hash())?;
        Ok(Some(path))
    }

    /// The identity of a presented token, or `None` for an unknown or revoked one.
    pub fn authenticate(&self, token: &Token) -> Result<Option<Identity>> {
        let hash = token.hash();
        if self.env_admin.as_ref().is_some_and(|h| h.matches(&hash)) {
            return Ok(Some(Identity {
                name: ENV_ADMIN_NAME.into(),
                role: Role::Admin,
            }));
        }
        self.store.authenticate(&hash)
    }

    /// Makes a token; the clear token is returned here and nowhere else.
    pub fn create(&self, name: &str, role: Role) -> Result<(TokenInfo, Token)> {
        check_token_name(name)?;
        let token = Token::generate()?;
        let info = self.store.insert(name, role, &token.hash())?;
        Ok((info, token))
    }

    /// Every token that is not revoked.
    pub fn list(&self) -> Result<Vec<TokenInfo>> {
        self.store.list()
    }

    /// Revokes the token called `name`: it stops working at once.
    pub fn revoke(&self, name: &str) -> Result<TokenInfo> {
        self.store.revoke(name)
    }
}

/// 1–64 characters of letters, digits, `-`, `_` and `.`.
fn check_token_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "invalid token name `{name}`: use 1-64 letters, digits, '-', '_' and '.'"
        )))
    }
}

/// Writes `secret` to a new file only its owner can read.
fn write_secret(path: &Path, secret: &str) -> Result<()> {
    use std::io::Write;
    let io = |source| Error::Io {
        context: format!("writing {}", path.display()),
        source,
    };
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(format!("{secret}\n").as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(env: Option<Token>) -> (tempfile::TempDir, Tokens) {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(&dir.path().join("so1s.db")).unwrap();
        (dir, Tokens::new(store, env))
    }

    #[test]
    fn tokens_are_random_prefixed_and_never_printed() {
        let (a, b) = (Token::generate().unwrap(), Token::generate().unwrap());
        assert_ne!(a, b);
        assert!(a.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(a.expose().len(), TOKEN_PREFIX.len() + 64);
        assert!(!format!("{a:?} {:?}", a.hash()).contains(&a.expose()[5..]));
    }

    #[test]
    fn roles_are_ordered_and_parsed() {
        assert!(Role::Viewer < Role::Deployer && Role::Deployer < Role::Admin);
        assert_eq!("deployer".parse::<Role>().unwrap(), Role::Deployer);
        assert!("root".parse::<Role>().is_err());
        let viewer = Identity {
            name: "ci".into(),
            role: Role::Viewer,
        };
        assert!(viewer.require(Role::Viewer).is_ok());
        let err = viewer.require(Role::Deployer).unwrap_err();
        assert!(matches!(err, Error::Forbidden(_)), "{err:?}");
    }

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        assert_eq!(bearer("Bearer abc").unwrap().expose(), "abc");
        assert_eq!(bearer("bearer  abc ").unwrap().expose(), "abc");
        assert!(bearer("Basic abc").is_none());
        assert!(bearer("Bearer ").is_none());
        assert!(bearer("abc").is_none());
    }

    #[test]
    fn created_tokens_authenticate_until_revoked() {
        let (_dir, tokens) = tokens(None);
        let (info, token) = tokens.create("ci", Role::Deployer).unwrap();
        assert_eq!((info.name.as_str(), info.role), ("ci", Role::Deployer));
        let who = tokens.authenticate(&token).unwrap().unwrap();
        assert_eq!(who.role, Role::Deployer);
        assert!(tokens
            .authenticate(&Token::new("so1s_nope"))
            .unwrap()
            .is_none());
        let listed = tokens.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].last_used_at_ms.is_some(), "use is recorded");
        let err = tokens.create("ci", Role::Viewer).unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        tokens.revoke("ci").unwrap();
        assert!(tokens.authenticate(&token).unwrap().is_none());
        assert!(tokens.list().unwrap().is_empty());
        assert!(matches!(tokens.revoke("ci"), Err(Error::NotFound(_))));
        // The name is free again once revoked.
        tokens.create("ci", Role::Viewer).unwrap();
        assert!(tokens.create("bad name", Role::Viewer).is_err());
    }

    #[test]
    fn the_first_start_writes_an_admin_token_only_its_owner_reads() {
        let (dir, tokens) = tokens(None);
        let path = tokens.bootstrap(dir.path()).unwrap().unwrap();
        let secret = std::fs::read_to_string(&path).unwrap();
        let who = tokens.authenticate(&Token::new(secret)).unwrap().unwrap();
        assert_eq!(who.role, Role::Admin);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Once a token exists, nothing more is made.
        assert!(tokens.bootstrap(dir.path()).unwrap().is_none());
    }

    #[test]
    fn the_environment_token_is_an_admin_and_skips_the_bootstrap() {
        let env = Token::new("from-a-secret");
        let (dir, tokens) = tokens(Some(env.clone()));
        assert!(tokens.bootstrap(dir.path()).unwrap().is_none());
        assert!(!admin_token_path(dir.path()).exists());
        let who = tokens.authenticate(&env).unwrap().unwrap();
        assert_eq!((who.name.as_str(), who.role), (ENV_ADMIN_NAME, Role::Admin));
    }
}
