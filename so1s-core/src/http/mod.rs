//! The warp HTTP servers. They call the library's services and never a backend directly.
//!
//! - [`predict`]: the predict server of one model version (`so1s-predict`).
//! - [`api`]: the management API and the inference gateway (`so1s serve`).
//! - [`error`]: the one JSON error shape, `{"error": "...", "error_type": "..."}`, and the
//!   mapping of every failure to its status code.

pub mod api;
pub mod error;
pub mod predict;

pub use error::ApiError;
