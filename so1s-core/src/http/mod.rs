//! The warp HTTP servers. They call the library's services and never a backend directly.
//!
//! - [`predict`]: the predict server of one model version (`so1s-predict`).
//! - [`error`]: the one JSON error shape, `{"error": "...", "error_type": "..."}`, and the
//!   mapping of every failure to its status code.

pub mod error;
pub mod predict;

pub use error::ApiError;
