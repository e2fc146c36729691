//! The tonic handlers: validate, call the registry, map the error. Nothing else.

pub mod admin;
pub mod breakers;
pub mod convert;
pub mod session;
pub mod watch;

pub use admin::AdminService;
pub use breakers::BreakersService;
