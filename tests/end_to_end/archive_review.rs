//! Regressions from an attacker's review of the archive import: depth, empty link targets, duplicate artifacts, bundle reuse, open-file limits.
