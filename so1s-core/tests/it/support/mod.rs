//! Shared helpers of the tests of the platform and the api routes: fakes of the backends
//! that need no model ([`builder::FakeBuilder`], [`rollout::FakeRollout`]) and a platform
//! over them ([`TestPlatform`]).

#![allow(dead_code)]

pub mod builder;
pub mod platform;
pub mod record;
pub mod rollout;

pub use builder::{fake_archive, fake_artifact, fake_body};
pub use platform::{name, open_store, registry_path, v, TestPlatform};
pub use record::PATIENCE;
pub use rollout::fake_endpoint;
