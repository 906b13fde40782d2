//! End-to-end tests of fruix against the real tools: Guile reads fruix's
//! S-expressions, Debian's `mtree` checks its manifests, `nix-hash` agrees
//! with its tree signatures, `bmake` and `cc` build the miniature FreeBSD
//! tree, and the `fruix` binary runs as users run it.
//!
//! A missing tool fails the test that needs it, naming the package to install
//! (`scripts/test.sh` installs them all).

mod util;

mod archive_bounds;
mod archive_review;
mod bad_input;
mod build_local;
mod cli_args_review;
mod cli_cleanup;
mod cli_defects;
mod cli_paths_review;
mod cli_review;
mod cli_review_b;
mod cli_surface_review;
mod config_escape_review;
mod copy_hostile_review;
mod copy_peer_review;
mod copy_review;
mod docs;
mod executor_panic;
mod executor_review;
mod executors_external;
mod executors_plugin;
mod ext_review;
mod freebsd_version;
mod guest_cancel_review;
mod guest_gone;
mod guest_import_cancel;
mod guest_leftover_review;
mod guest_review;
mod guile;
mod hostile_metadata;
mod import_path_review;
mod interrupts;
mod json_paths;
mod layout;
mod matrix;
mod matrix_export;
mod matrix_hostile_review;
mod matrix_pipeline_run;
mod matrix_report_review;
mod matrix_slots;
mod matrix_split;
mod matrix_ssh;
mod mtree;
mod nix_hash;
mod promote_cli;
mod protocol_bytes_review;
mod race;
mod readme;
mod registry_review;
mod repair_adopt_review;
mod repair_interrupted;
mod roots_review;
mod runner_review;
mod signature_review;
mod signing;
mod source_owner_review;
mod source_race_review;
mod source_review;
mod source_untouched;
mod sources;
mod ssh_auth;
mod ssh_build;
mod ssh_conformance;
mod ssh_host_keys;
mod ssh_import;
mod ssh_import_limits;
mod ssh_run_ids;
mod ssh_source;
mod sshd;
mod state_dir_paths;
mod store_archive;
mod store_concurrency;
mod store_copy;
mod store_entries;
mod store_followups;
mod store_integrity;
mod store_lifecycle;
mod store_signals;
mod store_signals_review;
mod store_verify_review;
mod store_writer_review;
mod terminal;
mod trust_review;
mod vm;
mod vm_console_review;
mod vm_stale;
mod vm_wrapper;
mod xcpng_master;
