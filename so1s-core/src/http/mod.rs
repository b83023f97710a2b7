//! The warp HTTP servers. They call the library's services and never a backend directly.
//!
//! - `predict` (feature `inference`): the predict server of one model version
//!   (`so1s-predict`), with its Open Inference Protocol routes (`oip`).
//! - [`api`]: the management API and the inference gateway (`so1s serve`).
//! - [`serve`]: the connection loop with bounds on request heads (time and size).
//! - [`error`]: the one JSON error shape, `{"error": "...", "error_type": "..."}`, and the
//!   mapping of every failure to its status code.

pub mod api;
pub mod error;
#[cfg(feature = "inference")]
mod oip;
#[cfg(feature = "inference")]
pub mod predict;
pub mod serve;

pub use error::ApiError;
