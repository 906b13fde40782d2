//! `fruix-freebsd`: the FreeBSD build contract, written once.
//!
//! Every executor that builds FreeBSD base renders what this crate says,
//! on this machine, in a jail or in a guest, so that they all run the same
//! make steps and produce the same artifact trees:
//!
//! - [`plan`]: a [`BuildRequest`](fruix_core::BuildRequest) becomes a
//!   [`BuildPlan`]: the make steps it needs (`buildworld`, `buildkernel`,
//!   `installworld`, `distribution`, `installkernel`), each a make
//!   invocation with its arguments, environment and working directory, plus
//!   the slicing of the install trees. A plan is data; nothing here runs
//!   make.
//! - [`work`]: the work directory (object tree and `DESTDIR`s).
//! - [`slice`](mod@slice): which installed paths become `world`, `kernel`, `headers`
//!   and `bootloader`, applied in process with [`tree`] (moves and copies
//!   that keep modes, owners, hard links and symlinks), or rendered by [`sh`]
//!   as a POSIX sh script for a machine that has only sh, make, cc, tar and
//!   cp. [`dir`] opens the directories of install trees by descriptor, so
//!   that no symlink a build planted is ever followed.
//! - [`source`]: what makes a directory a FreeBSD source tree, and the
//!   version its `sys/conf/newvers.sh` declares.
//! - [`probe`]: the one function that chooses an artifact's probe file.
//! - [`promotion`]: signing the artifacts and writing `promotion.scm`.
//!
//! Errors are [`fruix_core::Error`], the executors' error type.

#![warn(missing_docs)]

pub mod artifact;
pub mod checkout;
pub mod dir;
pub mod plan;
pub mod probe;
pub mod promotion;
pub mod sh;
pub mod slice;
pub mod source;
pub mod tree;
pub mod work;

pub use artifact::Artifact;
pub use plan::{BuildPlan, Layout, MakeStep};
pub use slice::Slicing;
