//! The built-in Fruix executors and the FreeBSD build driver they share.
//!
//! [`driver`] runs a native FreeBSD base build with make (`buildworld`,
//! `buildkernel`, `installworld`, `distribution`, `installkernel`), streams
//! every step's output as events and into `logs/<step>.log`, slices the
//! installed trees into the artifacts of a normalized result root, signs them
//! and writes `promotion.scm`. It is the one place that knows the FreeBSD build
//! contract; every executor that runs make runs it (on this machine, or later
//! inside a FreeBSD guest).
//!
//! [`local`] is the `local` executor: the driver on this machine.
//!
//! [`guest`] holds the two SSH executors, `host-initiated` (the host drives
//! the driver's make steps in a guest) and `guest-self-hosted` (the guest's
//! own fruix runs the driver). They share the transport in [`ssh`] (russh:
//! known_hosts checking, key and agent authentication, remote commands whose
//! cancellation stops the remote process tree) and the import in [`import`]
//! (one tar stream into a staging directory, extracted as untrusted input
//! within caps, re-hashed against the guest's signatures, moved into place
//! when complete). Guest output is bounded everywhere: [`bounded`] cuts long
//! lines and keeps only the tails of output.
//!
//! [`external`] runs executors declared in executors files: commands for
//! the stages prepare, build, collect and cleanup, written in any language.
//!
//! Executors are registered with `inventory` and found by name through
//! [`fruix_core::Registry::compiled`]. A binary that only names this crate in
//! `Cargo.toml` may have the registrations discarded by the linker; calling
//! [`link`] once keeps them.
//!
//! Errors are [`fruix_core::Error`]: the executor contract is expressed in the
//! core's error type, so this crate adds none of its own.

pub mod bounded;
pub mod driver;
pub mod external;
pub mod guest;
pub mod import;
pub mod local;
pub mod ssh;

/// Makes sure this crate, and with it its executor registrations, is linked
/// into the calling binary. Does nothing at run time.
pub fn link() {}
