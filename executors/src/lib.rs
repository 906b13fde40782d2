//! The built-in Fruix executors and the FreeBSD build driver they share.
//!
//! The FreeBSD build contract (make steps and their variables, artifact
//! slicing, probes, `promotion.scm`) lives in `fruix-freebsd`; the executors
//! here render it. [`driver`] runs its plan on this machine: every make step
//! as its own stage, its output streamed as events and into
//! `logs/<step>.log`, then the slicing of the installed trees into the
//! artifacts of a normalized result root, signed into `promotion.scm`.
//!
//! [`local`] is the `local` executor: the driver on this machine.
//!
//! [`guest`] holds the two SSH executors, `host-initiated` (the host drives
//! the plan's make steps in a guest, rendered as POSIX sh) and
//! `guest-self-hosted` (the guest's own fruix runs the driver). They share
//! the transport in [`ssh`] (russh: known_hosts checking, key and agent
//! authentication, remote commands whose cancellation stops the remote
//! process tree) and the import in [`import`]
//! (one tar stream into a staging directory, extracted as untrusted input
//! within caps, re-hashed against the guest's signatures, moved into place
//! when complete). Guest output is bounded everywhere: [`fruix_core::bounded`] cuts long
//! lines and keeps only the tails of output.
//!
//! [`vm`] owns virtual machines' whole lives around a build: prepare a
//! throw-away disk, boot, wait for SSH, build, and always stop and destroy
//! (drivers for QEMU, bhyve and XCP-ng).
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

#![warn(missing_docs)]

pub mod driver;
pub mod external;
pub mod guest;
pub mod import;
pub mod local;
pub mod ssh;
pub mod vm;

/// Makes sure this crate, and with it its executor registrations, is linked
/// into the calling binary. Does nothing at run time.
pub fn link() {}
