//! The one error type of so1s-core, [`Error`]: the kinds the library and its servers meet,
//! and, apart, the kinds only the api client meets ([`ClientError`], wrapped as
//! [`Error::Client`]).

use std::path::PathBuf;

/// Everything that can go wrong in so1s-core (and so1s-inference, which shares these kinds).
/// Each message names the step that failed; the underlying cause, where there is one, is
/// attached as the error's source.
///
/// The servers answer each kind with its status and `error_type`
/// ([`crate::http::ApiError`]); [`Error::Client`] is the api client's alone. New kinds may
/// come: match with a wildcard arm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of a model directory could not be read.
    #[error("reading {path}")]
    ModelFile {
        /// The file or directory that could not be read.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The `so1s.toml` manifest is not valid.
    #[error("invalid manifest {path}")]
    Manifest {
        /// The manifest's path.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: Box<toml::de::Error>,
    },

    /// A JSON file of the model (`config.json`, `modules.json`, ...) is not valid.
    #[error("invalid model file {path}")]
    ModelJson {
        /// The file's path.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },

    /// The model directory is not a model so1s can serve; the message says what to change.
    #[error("unusable model: {0}")]
    InvalidModel(String),

    /// rust-bert or libtorch failed to load the model.
    #[error("loading the model failed: {0}")]
    Load(String),

    /// The forward pass failed.
    #[error("inference failed: {0}")]
    Inference(String),

    /// The request's input cannot be served (empty text, too long, too many texts...).
    #[error("{0}")]
    InvalidInput(String),

    /// The prediction queue is full: the caller should retry later.
    #[error("overloaded: {waiting} requests are already waiting for the model")]
    Overloaded {
        /// How many requests were waiting.
        waiting: usize,
    },

    /// The model is not loaded (yet, or any more).
    #[error("the model is not ready")]
    NotReady,

    /// No such model or version.
    #[error("not found: {0}")]
    NotFound(String),

    /// The request conflicts with the current state (deleting a serving version, ...).
    #[error("{0}")]
    Conflict(String),

    /// An upload is over the size limit.
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },

    /// Storing an upload would take the store past its disk quota.
    #[error("{0}")]
    QuotaExceeded(String),

    /// An upload could not be received or is not an archive.
    #[error("{0}")]
    Upload(String),

    /// The container engine or cluster API refused or failed an operation.
    #[error("{0}")]
    Backend(String),

    /// The request carries no token, or one that is unknown or revoked.
    #[error("{0}")]
    Unauthorized(String),

    /// The request's token has too small a role.
    #[error("{0}")]
    Forbidden(String),

    /// A limit was reached (a queue, a number of subscribers): try again later.
    #[error("{0}")]
    Busy(String),

    /// The upstream (a predict server) did not answer in time.
    #[error("{0}")]
    Timeout(String),

    /// The database failed.
    #[error("{context}")]
    Database {
        /// What was being done.
        context: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },

    /// An object could not be serialized (a Kubernetes object to JSON or YAML, ...): it is
    /// not printed or sent in a broken form.
    #[error("serializing {what}")]
    Serialize {
        /// What was being serialized (`the Deployment so1s-minilm`).
        what: String,
        /// What the serializer said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A file operation or socket failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// A call of the api client ([`crate::client::ApiClient`]) failed. Client side only: no
    /// server answers with it.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// What a call of the api client can meet (client side).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The api server answered an error.
    #[error("{message} ({status} {error_type})")]
    Remote {
        /// The HTTP status (0 when the answer broke off).
        status: u16,
        /// The server's `error_type`.
        error_type: String,
        /// The server's message.
        message: String,
    },

    /// The api server cannot be reached.
    #[error("the server cannot be reached: {0}")]
    Unreachable(String),
}

impl Error {
    /// A short stable name of the error's kind: the `error_type` of JSON error bodies and the
    /// label of error metrics.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::ModelFile { .. }
            | Error::Manifest { .. }
            | Error::ModelJson { .. }
            | Error::InvalidModel(_) => "invalid_model",
            Error::Load(_) => "load",
            Error::Inference(_) => "inference",
            Error::InvalidInput(_) => "validation",
            Error::Overloaded { .. } => "overloaded",
            Error::NotReady => "not_ready",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::TooLarge { .. } => "payload_too_large",
            Error::QuotaExceeded(_) => "insufficient_storage",
            Error::Upload(_) => "bad_upload",
            Error::Backend(_) => "backend",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::Busy(_) => "busy",
            Error::Timeout(_) => "gateway_timeout",
            Error::Database { .. } => "database",
            Error::Client(ClientError::Remote { .. }) => "remote",
            Error::Client(ClientError::Unreachable(_)) => "unreachable",
            Error::Serialize { .. } => "serialize",
            Error::Io { .. } if self.is_disk_full() => "insufficient_storage",
            Error::Io { .. } => "io",
        }
    }

    /// A write failed because the disk (or the user's disk quota) is full: the client is told
    /// 507, as past `--store-quota-bytes`, not a 500.
    pub fn is_disk_full(&self) -> bool {
        use std::io::ErrorKind;
        matches!(self, Error::Io { source, .. }
            if matches!(source.kind(), ErrorKind::StorageFull | ErrorKind::QuotaExceeded))
    }

    /// The message with every cause in the chain, for logs and error bodies.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}

/// so1s-core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
