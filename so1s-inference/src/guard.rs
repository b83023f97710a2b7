//! Loading and running rust-bert and libtorch code that may panic on bad files or tensors:
//! a panic becomes an error that names the step, never a dead model thread.

use rust_bert::resources::{LocalResource, ResourceProvider};
use so1s_core::{Error, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// A file of the model directory as a rust-bert resource.
pub(crate) fn local(path: &Path) -> Box<dyn ResourceProvider + Send> {
    Box::new(LocalResource::from(path.to_owned()))
}

/// Runs a loading step, a panic in libtorch or rust-bert becoming a load error.
pub(crate) fn loading<T>(step: impl FnOnce() -> Result<T>) -> Result<T> {
    guard("loading the model", step).map_err(|e| match e {
        Error::Inference(message) => Error::Load(message),
        other => other,
    })
}

/// Runs rust-bert code that may panic on bad files or tensors, turning a panic into an error
/// that names the step.
pub(crate) fn guard<T>(step: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Err(Error::Inference(format!("{step} panicked: {message}")))
    })
}
